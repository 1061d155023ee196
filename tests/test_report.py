"""The report (issue 7): report.html with every figure inlined and beside it, consistent with the manifest,
re-rendered by `eecc report`, pictures from `eecc inspect --png`, and every image decoding in Chromium.

One bundle is compiled for the whole module: the digits CNN on rk3588-cuda (three processors, so the
chosen placement has two exits and the threshold heatmaps are drawn), through the real CLI.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eecc.examples import datasets
from eecc.cli import main
from eecc.report.graph_picture import bundle_dot, collect, dot_available
from eecc.report.page import FIGURES, REPORT, write_report
from eecc.report.plots import pareto_front

CNN = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_dot = pytest.mark.skipif(not dot_available(), reason="graphviz 'dot' not installed (apt-get install graphviz)")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    if not CNN.exists():
        pytest.skip("fixture cnn.onnx not generated (python tests/fixtures/make_fixtures.py)")
    root = tmp_path_factory.mktemp("report")
    data = datasets.save_npz(datasets.load("digits"), root / "digits.npz")
    out = root / "bundle"
    proc = subprocess.run([sys.executable, "-m", "eecc", "compile", str(CNN), "--data", str(data),
                           "--target", "rk3588-cuda", "--search", "--no-codegen", "-o", str(out), "--objective", "macs",
                           "--cache-dir", str(root / "cache"), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def _images(html: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]+)"', html)


def test_compile_writes_a_self_contained_report_with_pngs_beside_it(bundle):
    out, proc = bundle
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["report"] == REPORT and f"report {out / REPORT}" in proc.stdout
    html = (out / REPORT).read_text()
    pngs = sorted(out.glob("report.*.png"))
    expected = {f"report.{name}.png" for name, _, _ in FIGURES if name != "blocks" or dot_available()}
    assert {p.name for p in pngs} == expected
    srcs = _images(html)
    assert len(srcs) == len(pngs)
    inlined = [base64.b64decode(s.split(",", 1)[1]) for s in srcs]
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert sorted(inlined) == sorted(p.read_bytes() for p in pngs)  # the same images, inline and beside
    assert all(b.startswith(PNG_MAGIC) for b in inlined)
    # Self-contained: nothing to fetch (no external src, href, stylesheet or script).
    assert not re.search(r'(src|href)="(?!data:)', html)
    # On rk3588-cuda the cost model covers the CPU (the Cortex-A fit) only: the stage-cost caption says which
    # processors it priced and what was used on the others
    used = list(dict.fromkeys(s["target"] for s in manifest["stages"]))
    assert manifest["cost_model"]["processors"]["cpu"].startswith("measured cost model")
    fitted, nominal = [p for p in used if p == "cpu"], [p for p in used if p != "cpu"]
    assert (f"at the processor&#x27;s clock on {', '.join(fitted)}" in html) == bool(fitted)
    assert (f"from the platform&#x27;s nominal MAC/s on {', '.join(nominal)}" in html) == bool(nominal)


def test_quiet_compile_prints_no_progress(bundle):
    _, proc = bundle
    assert proc.stderr == ""


def test_threshold_grid_reproduces_the_chosen_point(bundle):
    out, _ = bundle
    manifest = json.loads((out / "manifest.json").read_text())
    grid, chosen = manifest["threshold_grid"], manifest["placement"]["metrics"]["search"]
    assert len(chosen["exits"]) == 2 and grid["exits"] == chosen["exits"]
    (m,) = grid["maps"]
    t0, t1 = (np.asarray(t) for t in m["thresholds"])
    i, j = int(np.argmin(abs(t0 - chosen["thresholds"][0]))), int(np.argmin(abs(t1 - chosen["thresholds"][1])))
    assert t0[i] == pytest.approx(chosen["thresholds"][0]) and t1[j] == pytest.approx(chosen["thresholds"][1])
    # The heatmap cell under the star is the search's own test-split evaluation of the chosen thresholds.
    assert m["accuracy"][i][j] == pytest.approx(chosen["accuracy"])
    assert m["mean_macs"][i][j] == pytest.approx(chosen["mean_macs"])
    # Raising both thresholds to "never exit" costs the full model plus both heads.
    heads = sum(s["head_macs"] for s in manifest["stages"][:-1])
    assert m["mean_macs"][-1][-1] == pytest.approx(manifest["original_macs"] + heads)


@needs_dot
def test_block_graph_puts_each_exit_after_its_cut_in_its_stage(bundle):
    out, _ = bundle
    manifest = json.loads((out / "manifest.json").read_text())
    source = bundle_dot(out, manifest)
    from eecc.model import ir

    blocks, exits = collect([ir.load(out / s["file"], classifier=False) for s in manifest["stages"]])
    by_output = {b.output: b for b in blocks}
    for k, cut in enumerate(manifest["placement"]["cuts"]):
        block = by_output[cut]
        assert block.stage == k and exits[k].after_block == block.index
        assert f"b{block.index} -> exit{k} " in source
    for k in range(len(manifest["stages"])):
        assert f"subgraph cluster_stage{k}" in source
    assert sum(b.macs for b in blocks) == manifest["original_macs"]


def test_report_command_rerenders_and_drops_stale_figures(bundle, tmp_path, capsys):
    out, _ = bundle
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    (copy / "report.tradeoff.png").unlink()
    manifest = json.loads((copy / "manifest.json").read_text())
    assert main(["report", str(copy), "--json"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)  # stdout carries only the JSON
    assert printed["report"] == str(copy / REPORT)
    assert str(copy / "report.tradeoff.png") in printed["figures"]
    # A bundle without the grid (an older eecc): the heatmap is not drawn, and its old PNG goes.
    del manifest["threshold_grid"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["report", str(copy), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert not (copy / "report.threshold_maps.png").exists()
    html = (copy / REPORT).read_text()
    assert "threshold grid: not drawn" in html
    assert len(_images(html)) == len(list(copy.glob("report.*.png")))


@needs_dot
@pytest.mark.parametrize("what", ["bundle", "model"])
def test_inspect_png_draws_the_graph_and_keeps_the_table(bundle, tmp_path, capsys, what):
    out, _ = bundle
    png = tmp_path / "g.png"
    assert main(["inspect", str(out if what == "bundle" else CNN), "--png", str(png)]) == 0
    captured = capsys.readouterr()
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert "wrote" in captured.err and "MACs" in captured.out
    assert main(["inspect", str(out if what == "bundle" else CNN), "--png", str(png), "--json"]) == 0
    json.loads(capsys.readouterr().out)


def test_pareto_front_keeps_only_non_dominated_points():
    points = [(10, 0.5), (20, 0.7), (15, 0.4), (30, 0.7), (25, 0.9), (5, 0.1)]
    assert pareto_front(points) == [(5, 0.1), (10, 0.5), (20, 0.7), (25, 0.9)]


def test_report_on_a_folder_without_manifest_is_a_user_error(tmp_path):
    from eecc.errors import EeccError

    with pytest.raises(EeccError, match="not an eecc bundle"):
        write_report(tmp_path)


# An image counts as shown when it has decoded dimensions and a laid-out box, and, drawn to a canvas
# (which decodes it synchronously), its second-to-last pixel row is opaque: every figure has an opaque
# background, so a truncated file fails here (the very last row can be part-covered: cairo rounds the
# page size). Synchronous on purpose: --dump-dom does not wait for promises such as img.decode().
_CHECK = """<script>window.addEventListener("load", function () {
  var imgs = [].slice.call(document.images);
  function shown(i) {
    var r = i.getBoundingClientRect();
    if (!(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0 && r.width > 0 && r.height > 0)) return false;
    var c = document.createElement("canvas"); c.width = i.naturalWidth; c.height = i.naturalHeight;
    var g = c.getContext("2d"); g.drawImage(i, 0, 0);
    var row = g.getImageData(0, Math.max(i.naturalHeight - 2, 0), i.naturalWidth, 1).data;
    for (var k = 3; k < row.length; k += 4) { if (row[k] !== 255) return false; }
    return true;
  }
  var d = document.createElement("pre"); d.id = "eecc-check";
  d.textContent = "IMAGES " + imgs.length + " SHOWN " + imgs.filter(shown).length;
  document.body.appendChild(d);
});</script>"""


def _chromium_check(html: str, folder: Path) -> tuple[int, int]:
    """(images, images decoded and laid out) as Chromium sees the page."""
    page = folder / "check.html"
    page.write_text(html.replace("</body>", _CHECK + "</body>"))
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={folder / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r"IMAGES (\d+) SHOWN (\d+)", proc.stdout)
    assert found, f"chromium printed no result (rc {proc.returncode}): {proc.stderr[-500:]}"
    return int(found[1]), int(found[2])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_every_image_decodes_and_shows_in_headless_chromium(bundle, tmp_path):
    out, _ = bundle
    html = (out / REPORT).read_text()
    total, shown = _chromium_check(html, tmp_path)
    assert total == len(list(out.glob("report.*.png"))) >= 4
    assert shown == total
    # The check itself can fail: a truncated image and a garbage one are counted as not shown.
    first, second = _images(html)[:2]
    broken = html.replace(first, first[:len(first) // 2], 1).replace(second, "data:image/png;base64,AAAA", 1)
    assert _chromium_check(broken, tmp_path) == (total, total - 2)


@needs_dot
def test_block_graph_png_is_opaque_to_its_last_row(tmp_path):
    """cairo rounds dot's page size up and left the bottom rows part-transparent whatever bgcolor said (alpha 212-227
    on the cnn's cpu → gpu → gpu picture; the headless-Chromium check failed on it): the PNG is flattened on white."""
    from PIL import Image

    from eecc.report.graph_picture import render_png

    source = 'digraph g { graph [bgcolor=white]; a [shape=box, style="rounded,filled"]; a -> b; }'
    for dpi in (72, 110, 137):
        with Image.open(render_png(source, tmp_path / f"g{dpi}.png", dpi=dpi)) as image:
            pixels = np.asarray(image.convert("RGBA"))
        assert image.mode == "RGB" and (pixels[..., 3] == 255).all()


def test_stages_that_were_not_emulated_are_not_drawn_as_emulated():
    """nu13 F10: on tri2.toml (stage 0 emulated on the Cortex-A host, stages 1-2 on a Cortex-M7 without a backend) the
    stage-cost figure hatched stages 1-2 "calibrated (emulated)": their exit figures mix the emulated stage 0 with
    nominal MAC/s seconds. Only stages emulated up to themselves get a calibrated bar; the legend names the others."""
    from eecc.report.plots import stage_costs

    def stage(k, emulated):
        return {"index": k, "target": "host" if k == 0 else "npu", "exit_latency_s": 1e-3 * (k + 1),
                "exit_energy_j": 1e-4 * (k + 1), "latency_calibrated_s": 5e-4 if emulated else None,
                "exit_latency_calibrated_s": 2e-3 * (k + 1), "exit_energy_calibrated_j": 2e-4 * (k + 1)}

    fig = stage_costs({"stages": [stage(0, True), stage(1, False), stage(2, False)]})
    for ax in fig.axes:
        hatched = [b.get_height() for b in ax.patches if b.get_hatch() == "xx"]
        assert len(hatched) == 3 and hatched[0] > 0 and hatched[1:] == [0.0, 0.0], hatched
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "calibrated (emulated); none for stages 1, 2: not emulated" in labels, labels
    fig = stage_costs({"stages": [stage(0, False), stage(1, False)]})
    assert not [b for ax in fig.axes for b in ax.patches if b.get_hatch() == "xx"]


def test_stage_cost_legends_cover_no_bar_and_stay_in_the_figure():
    """nu15 F8: the legend (upper left, 3 entries) of an emulated 2-stage bundle's stage costs covered the top of
    stage 1's estimated bar (b_mbn11q's figures below)."""
    from eecc.report.plots import stage_costs

    stages = [{"index": k, "target": "m4", "exit_latency_s": lat, "exit_energy_j": j, "latency_calibrated_s": c,
               "exit_latency_calibrated_s": cl, "exit_energy_calibrated_j": cj}
              for k, (lat, j, c, cl, cj) in enumerate(((3.51e-3, 1.151e-4, 3.20e-3, 3.22e-3, 1.057e-4),
                                                       (22.56e-3, 7.429e-4, 20.23e-3, 23.45e-3, 7.724e-4)))]
    fig = stage_costs({"stages": stages, "placement": {"metrics": {"measured": {"mean_latency_s": 6.17e-3,
                                                                                "mean_energy_j": 2.03e-4}}}})
    fig.canvas.draw()
    renderer, box = fig.canvas.get_renderer(), fig.bbox
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        assert len(ax.get_legend().get_texts()) == 3
        assert not [p for p in ax.patches if p.get_height() > 0 and p.get_window_extent(renderer).overlaps(legend)]
        assert box.x0 <= legend.x0 and legend.x1 <= box.x1 and box.y0 <= legend.y0 and legend.y1 <= box.y1
