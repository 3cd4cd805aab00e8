"""``sam2kit evaluate``: J, F and J&F of video object segmentation predictions against a
benchmark's ground truth, to the numbers of the official evaluators."""

from __future__ import annotations

import argparse
from pathlib import Path

import sam2kit
from sam2kit.vos.datasets import DatasetError
from sam2kit.vos.evaluation import evaluate, output_files, table, write_outputs

from sam2kit.cli.common import CLIError, Console, add_feedback_options, one_line
from sam2kit.cli.vos import add_dataset_options

DESCRIPTION = """\
Score predicted masks against a benchmark's ground truth with the DAVIS 2017 measures: J
(region IoU), F (boundary F-measure), J&F; per object Mean, Recall (share of frames > 0.5) and
Decay (first quarter minus last quarter), and the global figures under the official names
(J&F-Mean, J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay). --layout davis follows
davis2017-evaluation (semi-supervised: first and last frames skipped), --layout sav SA-V's
sav_evaluator.py. Writes into PRED (or -o DIR):
  results.json                     every figure, per sequence and object, and the settings
  global_results-<split>.csv       the global figures (the official CSV)
  per-sequence_results-<split>.csv each object's J-Mean and F-Mean (the official CSV)
  results.csv                      SA-V's per-object table (--layout sav)
  jf_per_sequence.png              each sequence's J&F, best first
and prints the table (--json: the results document).
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="J&F of VOS predictions against a benchmark's ground truth",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", type=Path, required=True, metavar="GT",
                   help="the ground truth: a dataset root (DAVIS, SA-V, YouTube-VOS) or its folder of "
                        "per-sequence annotations")
    p.add_argument("--pred", type=Path, required=True, metavar="PRED",
                   help="the predictions: <seq>/<frame>.png (davis) or <seq>/<obj>/<frame>.png (sav)")
    p.add_argument("-o", "--output", type=Path, metavar="DIR",
                   help="where to write results.json, the CSVs and the chart (default: PRED)")
    add_dataset_options(p, layouts=("davis", "sav"))
    g = p.add_argument_group("scoring")
    g.add_argument("--all-frames", action="store_true",
                   help="score the first and last frames too (the semi-supervised protocol skips them)")
    g.add_argument("--strict", action="store_true",
                   help="a missing prediction is an error (default: scored as an empty mask and listed)")
    g.add_argument("--ignore-void", action="store_true",
                   help="leave void (255) pixels out of J and F (the official semi-supervised DAVIS code "
                        "scores them as background, so this changes the numbers)")
    g.add_argument("--jobs", type=_jobs, metavar="N", help="worker processes (default: one per CPU)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files of an earlier evaluation in the output folder")
    add_feedback_options(p)
    p.set_defaults(run=command)
    return p


def _jobs(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def command(args, console: Console) -> tuple[dict, str]:
    out = (args.output or args.pred).expanduser()
    split = args.split or "val"
    bar = None

    def on_sequence(_, done, total):
        bar.total = total
        bar.update(1)

    try:
        bar = console.progress(total=None, desc="sequences", unit="seq")
        doc = evaluate(args.gt, args.pred, args.layout, args.sequences, args.split, args.all_frames,
                       args.strict, args.ignore_void, args.jobs, on_sequence)
        bar.close()
        doc = {"sam2kit_version": sam2kit.__version__, **doc,
               "files": {role: str(out / name) for role, name in output_files(doc["layout"], split).items()}}
        write_outputs(doc, out, doc["layout"], split, args.overwrite)
    except (DatasetError, FileExistsError, ImportError) as e:
        raise CLIError(one_line(e)) from None
    finally:
        if bar is not None:
            bar.close()
    if doc["missing_predictions"]:
        console.note(f"note: {len(doc['missing_predictions'])} missing prediction file(s) or folder(s) "
                     f"scored as empty masks (listed in results.json; --strict makes them errors), e.g. "
                     f"{doc['missing_predictions'][0]}")
    if doc["unscored_objects"]:
        console.note(f"note: {len(doc['unscored_objects'])} object(s) have no ground truth on the scored "
                     f"frames and are not scored: {', '.join(doc['unscored_objects'][:5])}")
    return doc, summary(doc, out)


def summary(doc: dict, out: Path) -> str:
    g = doc["global"]
    jf = "n/a" if g["J&F-Mean"] is None else f"{g['J&F-Mean']:.3f}"
    return (f"{table(doc)}\n\n{doc['sequences']} sequences, {doc['objects']} objects, {doc['frames_scored']} "
            f"object-frames scored in {doc['seconds']:.1f} s ({doc['settings']['protocol']}); J&F-Mean {jf}\n"
            f"wrote    {', '.join(Path(p).name for p in doc['files'].values())} to {out}")
