"""The terminal summary of a video run (``sam2kit video``, on files and live sources alike)."""

from __future__ import annotations

from pathlib import Path

from sam2kit.cli.common import model_line


def summary(results: dict, output: Path) -> str:
    v, t, fps = results["video"], results["timings_s"], results["frames_per_second"]
    lines = [f"video    {v['path']} ({v['width']}x{v['height']}, {v['num_frames']} frames)",
             model_line(results),
             f"tracked  {results['totals']['frames']} frames in {t['tracking']:.1f} s "
             f"({fps['tracking'] or 0:.2f} frames/s; {fps['with_writing'] or 0:.2f} with writing)"]
    for o in results["totals"]["objects"]:
        lines.append(f"object {o['id']}: mask on {o['frames_with_mask']} frames, mean area "
                     f"{o['mean_area']:.0f} px, mean object score {o['mean_object_score']}")
    lines.append(f"wrote    frames/, masks/, overlays/, overlay.mp4, results.json to {output}")
    return "\n".join(lines)
