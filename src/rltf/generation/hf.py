"""The ``hf`` engine: transformers ``generate`` on the learner's own weights (the reference for correctness).

It shares the policy's in-memory model, so it always serves the current weights and a sync costs
nothing. Per-token log-probs come from the raw logits of each step (a logits processor sees them
before temperature and top-p are applied), so no second forward pass is needed.

Sampling is exactly ``SamplingParams``: transformers fills every generation setting a call leaves
unset from the model's own ``generation_config`` (a checkpoint may ship ``repetition_penalty``,
``top_k``, ``no_repeat_ngram_size``, ...), so the model's is swapped for a neutral one during the call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rltf.generation.base import Completion, Generation, OnComplete, Row, SamplingParams, TextStream, length_batches
from rltf.models import Policy
from rltf.prompts import Prompt


class _LogProbs:
    """Logits processor that keeps ``log_softmax`` of each step's raw scores (custom processors run
    before transformers' temperature and top-p warpers), so the next call can read the chosen token's."""

    def __init__(self) -> None:
        self.last: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        self.last = torch.log_softmax(scores.float(), dim=-1)
        return scores


class _ArgmaxRows:
    """Turns the given rows of a sampled batch greedy: every token but the top-scoring one gets
    ``-inf``, so sampling can only pick the argmax (temperature and top-p never change which
    token scores highest)."""

    def __init__(self, rows: list[int]):
        self.rows = rows

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        picked = scores[self.rows]
        top = picked.argmax(-1, keepdim=True)  # the first maximum, as greedy decoding picks it
        scores[self.rows] = torch.full_like(picked, float("-inf")).scatter(-1, top, picked.gather(-1, top))
        return scores


class _Rows:
    """Stopping criterion that feeds each new token to its :class:`Row` and reports finished rows at once.

    After a row stops ``generate`` pads it, and pad may equal EOS (SmolLM2), so where a row really
    ended is recorded here, not read back from the padding.
    """

    def __init__(self, rows: list[Row], logprobs: _LogProbs, eos: set[int], done: Any) -> None:
        self.rows, self.logprobs, self.eos, self.done = rows, logprobs, eos, done

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        tokens = input_ids[:, -1]
        picked = self.logprobs.last.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).tolist()
        for r, (token, logprob) in enumerate(zip(tokens.tolist(), picked)):
            row = self.rows[r]
            if row.finish_reason is None and row.add(token, logprob, self.eos):
                self.done(r)
        return torch.tensor([row.finish_reason is not None for row in self.rows], device=input_ids.device)


class HFEngine:
    """``generate`` in length-sorted batches of at most ``batch_size`` sequences."""

    name = label = "hf"
    shares_weights = True
    pads_prompts = True

    def __init__(self, policy: Policy, batch_size: int = 16) -> None:
        self.policy, self.batch_size, self.policy_version = policy, batch_size, 0

    def sync(self, version: int) -> float:
        self.policy_version = version  # the engine reads the learner's own weights
        return 0.0

    def close(self) -> None:
        pass

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams,
                 on_complete: OnComplete | None = None) -> Generation:
        """Deterministic given ``params.seed`` and the same prompts (the seed is set once, then the
        batches run in order); ``params.first_prompt`` is not used, so a call split across ranks
        samples other rows than the whole call."""
        import torch
        from transformers import GenerationConfig

        if params.seed is not None:
            torch.manual_seed(params.seed)
        draws = 1 if params.greedy else params.n
        started, new_tokens = time.perf_counter(), 0
        completions: list[list[Completion]] = [[] for _ in prompts]
        model = self.policy.model
        was_training, shipped = model.training, model.generation_config
        model.eval()
        model.generation_config = GenerationConfig(decoder_start_token_id=shipped.decoder_start_token_id)
        try:
            for batch in length_batches(self.policy.prompt_lengths(prompts), draws, self.batch_size):
                for i, samples in zip(batch, self._batch([prompts[i] for i in batch], batch, draws, params,
                                                         on_complete)):
                    new_tokens += sum(len(c.token_ids) for c in samples)
                    completions[i] = samples * params.n if params.greedy else samples
        finally:
            model.train(was_training)
            model.generation_config = shipped
        return Generation(completions, time.perf_counter() - started, new_tokens)

    def _batch(self, prompts: list[Prompt], indices: list[int], draws: int, params: SamplingParams,
               on_complete: OnComplete | None) -> list[list[Completion]]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        policy = self.policy
        inputs = policy.encode(prompts)
        eos = policy.eos_ids()
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=not params.greedy,
            temperature=params.temperature if not params.greedy else None,
            top_p=params.top_p if not params.greedy else None,
            top_k=0 if not params.greedy else None,
            num_return_sequences=draws,
            pad_token_id=policy.tokenizer.pad_token_id,
            eos_token_id=sorted(eos),
        )
        rows = [Row(p, TextStream(policy.tokenizer)) for p in prompts for _ in range(draws)]
        version = self.policy_version

        def done(r: int) -> None:
            if on_complete is not None:
                on_complete(indices[r // draws], r % draws, rows[r].completion(version))

        logprobs = _LogProbs()
        processors = LogitsProcessorList([logprobs])
        if params.greedy_first and not params.greedy:
            processors.append(_ArgmaxRows(list(range(0, len(rows), draws))))
        with torch.inference_mode():
            policy.model.generate(**inputs, generation_config=config, logits_processor=processors,
                                  stopping_criteria=StoppingCriteriaList([_Rows(rows, logprobs, eos, done)]))
        for r, row in enumerate(rows):
            if row.finish_reason is None:  # ran into max_new_tokens
                done(r)
        return [[rows[p * draws + j].completion(version) for j in range(draws)] for p in range(len(prompts))]
