"""Write ``tests/golden/steps.json``: run every golden case on the code as it is now.

Run it only when a change is *meant* to change what the engine executes or
what the chip costs (say so in the commit), never to make a refactor pass:

    python tests/golden/make_golden.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golden_cases import GOLDEN, as_json, cases, run_case  # noqa: E402


def main() -> None:
    out = {}
    for stem, rule, dataset in cases():
        out[f"{stem}/{rule}"] = dict(run_case(stem, rule, dataset), dataset=dataset)
        print(f"{stem}/{rule}", flush=True)
    tmp = GOLDEN.with_suffix(".tmp")
    tmp.write_text(as_json(out) + "\n")
    tmp.replace(GOLDEN)
    print(f"wrote {GOLDEN} ({len(out)} cases)")


if __name__ == "__main__":
    main()
