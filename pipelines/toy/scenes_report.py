"""The scenes evaluation's report: the printed lines, the Markdown figures and the contact sheet.

`python -m pipelines.toy.scenes_evaluate` measures; this module words and draws what it
measured (the model card and BENCHMARKS.md quote the Markdown).
"""

from __future__ import annotations

from PIL import Image

from pipelines.toy.scenes_evaluate import Trial, rates
from pipelines.toy.scenes_morph import GUIDANCE, MIDDLE, SIDE, STEPS, MorphCheck


def contact_sheet(images: list[Image.Image], columns: int) -> Image.Image:
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (SIDE * columns, SIDE * rows))
    for i, image in enumerate(images):
        sheet.paste(image.resize((SIDE, SIDE)), (SIDE * (i % columns), SIDE * (i // columns)))
    return sheet


def _percent(rate: float) -> str:
    return "  n/a" if rate != rate else f"{rate:4.0%}"


def report_lines(trained: list[Trial], held_out: list[Trial]) -> list[str]:
    a, b = rates(trained), rates(held_out)
    lines = [
        f"trained pairs: {a['renders']} renders: time {a['time']:.1%}, terrain {a['terrain']:.1%} "
        f"(kind {a['kind']:.1%}), both {a['both']:.1%}; night dark / noon blue and bright / sunset warm "
        f"{_percent(a['words']).strip()}",
        "  time    " + "  ".join(f"{k} {_percent(v).strip()}" for k, v in a["per_time"].items()),
        "  terrain " + "  ".join(f"{k} {_percent(v).strip()}" for k, v in a["per_terrain"].items()),
        f"held-out pairs: {b['renders']} renders: time {b['time']:.1%}, terrain {b['terrain']:.1%} "
        f"(kind {b['kind']:.1%}), both {b['both']:.1%}",
    ]
    for trial in held_out:
        r = trial.reading
        lines.append(f"  {trial.prompt!r} (seed {trial.seed}): read {r.time} / {r.terrain}")
    misses = [t for t in trained if not (t.time_ok and t.terrain_ok)]
    if misses:
        lines.append("trained misses: " + "; ".join(
            f"{t.prompt!r} -> {t.reading.time} / {t.reading.terrain}" for t in misses[:20])
            + (f"; ... {len(misses) - 20} more" if len(misses) > 20 else ""))
    return lines


def morph_lines(check: MorphCheck) -> list[str]:
    lines = [f"morph {check.prompts[0]!r} -> {check.prompts[1]!r}: {len(check.readings)} frames, {STEPS} steps "
             f"in {check.seconds:.1f} s ({check.threads} thread{'s' if check.threads != 1 else ''})"]
    for i, (r, (a, b)) in enumerate(zip(check.readings, check.distances)):
        mark = "*" if i in MIDDLE else " "
        lines.append(f" {mark}{i:2d} {r.time:8s} {r.terrain:16s} warmth {r.warmth:6.1f}  layered {r.layered:.2f}  "
                     f"roughness {r.roughness:5.1f}  to first {a:.2f}  to last {b:.2f}")
    lines.append(f"  ends' distance {check.ends_distance:.2f}; middle frames (*) " + ", ".join(
        f"{name} {share:.0%}" + (f" {'ok' if check.passed[name] else 'FAIL'}" if name in check.passed else "")
        for name, share in check.criteria.items()))
    return lines


def markdown(report: dict) -> str:
    """The figures as a Markdown table and list, for the model card and BENCHMARKS.md."""
    rows = [("trained pairs", report["trained"]), ("held-out pairs", report["held_out"]),
            ("generator's drawings through the VAE (ceiling)", report["vae_round_trip"])]
    lines = [f"Seeds {report['seeds']}, {STEPS} steps, guidance {GUIDANCE}, {SIDE} px; read by "
             "`pipelines/toy/scenes_measure.py` (`python -m pipelines.toy.scenes_evaluate`).", "",
             "| | renders | sky's time of day | terrain | terrain kind | both |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in rows:
        lines.append(f"| {name} | {r['renders']} | {r['time']:.0%} | {r['terrain']:.0%} | {r['kind']:.0%} | {r['both']:.0%} |")
    a = report["trained"]
    lines += ["", "Per time (trained): " + ", ".join(f"{k} {v:.0%}" for k, v in a["per_time"].items()) + ".",
              "Per terrain (trained): " + ", ".join(f"{k} {v:.0%}" for k, v in a["per_terrain"].items()) + ".",
              f"Night dark, noon blue and bright, sunset warm: {a['words']:.0%} of those renders.",
              "Held-out pairs read as: " + "; ".join(
                  f"\"{h['prompt']}\" -> {h['time']} / {h['terrain']}" for h in report["held_out_readings"]) + "."]
    morph = report.get("morph")
    if morph:
        lines.append(
            f"Morph \"{morph['prompts'][0]}\" -> \"{morph['prompts'][1]}\", {morph['frames']} frames x {STEPS} steps: "
            f"{morph['seconds']:.1f} s on {morph['threads']} thread(s); middle frames (t = 1/3..2/3): "
            + ", ".join(f"{k} {v:.0%}" for k, v in morph["criteria"].items()) + ".")
    return "\n".join(lines) + "\n"
