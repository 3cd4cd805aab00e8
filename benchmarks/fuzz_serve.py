"""Schemathesis against a real ``sam2kit serve`` for longer than CI does (tests/test_serve_hostile.py
runs the same for 45 s): every route of its /openapi.json, every check, the examples, coverage
and fuzzing phases, and the stateful phase (links between operations).

    python benchmarks/fuzz_serve.py --minutes 20            # exit status: Schemathesis's
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from serve_helpers import Server, random_checkpoint  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--seed", type=int, help="Schemathesis's seed (default: a random one, printed)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        media = tmp / "media"
        media.mkdir()
        srv = Server(random_checkpoint(tmp / "t.pt"), "--media-root", str(media), "--token", "fuzz", "-q")
        try:
            cmd = [str(Path(sys.executable).with_name("schemathesis")), "--config-file",
                   str(ROOT / "tests" / "schemathesis.toml"), "run", f"{srv.url}/openapi.json", "--checks", "all",
                   "--phases", "examples,coverage,fuzzing,stateful", "--max-time", str(int(args.minutes * 60)),
                   "-w", "1", "--request-timeout", "120", "--max-response-time", "120",
                   "--header", "Authorization: Bearer fuzz", "--generation-database", "none"]
            if args.seed is not None:
                cmd += ["--seed", str(args.seed)]
            rc = subprocess.run(cmd, cwd=tmp).returncode
        finally:
            srv.stop()
        print("server log (last lines):\n" + srv.log[-3000:])
        sys.exit(rc)


if __name__ == "__main__":
    main()
