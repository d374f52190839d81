"""Write ``src/rltf/data/mbpp_train_leaks.json``: the MBPP train tasks that twin a validation or test task.

``rltf.datasets.drop_mbpp_leaks`` reads the file (the trainer drops these problems unless
``data.drop_leaks: false``); the rule is in ``rltf.leaks``' docstring.

    python scripts/find_mbpp_leaks.py            # rewrite the file
    python scripts/find_mbpp_leaks.py --check    # exit 1 if the file is not what the rule gives
"""

from __future__ import annotations

import argparse
import sys

from rltf.datasets import LEAKS_FILE
from rltf.leaks import find_dataset_leaks, leaks_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the vendored file instead of writing it")
    args = parser.parse_args()
    text = leaks_json(find_dataset_leaks("mbpp"))
    if args.check:
        same = LEAKS_FILE.read_text() == text
        print("up to date" if same else f"{LEAKS_FILE} differs from what the rule gives")
        return 0 if same else 1
    LEAKS_FILE.write_text(text)
    print(f"wrote {LEAKS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
