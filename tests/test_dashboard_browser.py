"""The dashboard opened in a real browser (Debian's headless Chromium): the front is drawn."""

import shutil
import subprocess

import pytest

from spanmix.search import pareto_front, run_study
from spanmix.studies.config import load_config
from spanmix.studies.dashboard import render

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=10000",
]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (CI installs it: apt-get install chromium)")
def test_dashboard_renders_the_front_in_chromium(tiny_config, tmp_path):
    cfg = load_config(path=tiny_config(n_trials=4, sampler="grid"))
    study = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}")
    page = tmp_path / "dashboard.html"
    page.write_text(render(study, cfg))
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([CHROMIUM, *FLAGS, *profile, "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    # plotly drew the front: an SVG plot inside the front's div, with one marker per front point
    front_div = dom.split('id="front"', 1)[1].split('id="strips"', 1)[0]
    assert "main-svg" in front_div
    finished = [t for t in study.trials if t.values]
    n_front = len(pareto_front(study))
    # one marker per finished trial, plus the knee's star
    assert front_div.count('class="point"') == len(finished) + 1 and n_front > 0
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, *profile, "--window-size=1200,900", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    # a rendered plot has many colours (markers, lines, text); a blank or failed page has a handful
    assert len(colours) > 50
    # the front's marker colour (#d6604d) is on screen
    assert any(abs(r - 0xD6) < 12 and abs(g - 0x60) < 12 and abs(b - 0x4D) < 12 for _, (r, g, b) in colours)


def _console_and_dom(page, tmp_path) -> tuple[list[str], str]:
    """What the page wrote to the browser's console, and its DOM once drawn."""
    done = subprocess.run([CHROMIUM, *FLAGS, "--user-data-dir=" + str(tmp_path / "profile"), "--enable-logging=stderr",
                           "--v=0", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line], done.stdout


def _figure(dom: str, name: str) -> str:
    return dom.split(f'id="{name}"', 1)[1].split('class="figure"', 1)[0]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (CI installs it: apt-get install chromium)")
def test_the_dashboard_of_a_30_layer_layerwise_study_reads_per_layer(tmp_path):
    """A tiny random 30-layer checkpoint searched layer by layer: the page loads without a console
    message; the heatmap's axes are categories with one tick per measured value; the per-layer
    figure has one bar per layer; the strips scroll sideways instead of shrinking."""
    from test_checkpoint import _cfg, save_tiny

    from spanmix.search import StudyConfig, StudyView, preflight

    data = _cfg(save_tiny(tmp_path / "m", num_hidden_layers=30))
    data["study"].update(strategy="layerwise", sampler="nsga2", n_trials=33)
    data["space"].update(placements=["free"], context=48, windows=[8])
    data["data"].update(seq_len=48, min_distance=16, val_samples=2)
    data["layerwise"] = {"beam": 1, "expand": 1}
    cfg = StudyConfig.from_user(data)
    preflight(cfg)
    study = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}")
    page = tmp_path / "dashboard.html"
    page.write_text(render(study, cfg))
    console, dom = _console_and_dom(page, tmp_path)
    assert console == []
    assert "heatmap-placement" not in dom  # free placements: the per-layer figure says more
    n_full = {p.layers.n_full for p in StudyView(study, cfg).points()}
    heatmap = _figure(dom, "heatmap-window")
    assert heatmap.count('class="xtick"') == 2 and heatmap.count('class="ytick"') == len(n_full) == 4  # 30, 29, 28, 27
    assert 'data-unformatted="all full"' in heatmap and 'data-unformatted="-3"' not in heatmap
    assert _figure(dom, "layers").count('<g class="point"') == 30
    assert "overflow-x:auto" in dom and 'class="schedule"' in dom
