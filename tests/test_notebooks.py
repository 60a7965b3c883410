"""The worked notebooks (issue 10) execute at a small size and write real figures.

Each notebook in `notebooks/` is a jupytext percent-format script. It runs here in
this process (`runpy`, so JAX and qsp are imported once, and pytest's warnings-as-errors
applies to the notebooks too) with `QSP_NOTEBOOK_SMALL=1`, writing its figures to a
temporary folder (`QSP_NOTEBOOK_FIGURES`). Every expected figure must exist and be a
non-trivial image: a PNG larger than 5 kB whose pixels are not one colour (pixel
standard deviation > 0.02 on a 0-1 scale and more than 20 distinct colours).
"""

from __future__ import annotations

import os
import runpy

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FIGURES = {
    "01_crs_step_up.py": ["crs_first_dose_il6.png", "crs_typical_patient.png", "crs_il6_bands.png",
                          "crs_bcells.png", "crs_incidence.png"],
    "02_mapk.py": ["mapk_invitro_perk.png", "mapk_cascade_dose_response.png", "mapk_xenograft.png",
                   "mapk_orr_by_arm.png", "mapk_waterfall.png", "mapk_spider.png"],
    "03_clonal_resistance.py": ["clonal_invitro_surface.png", "clonal_dynamics.png", "clonal_ri_waterfall.png",
                                "clonal_ttp_km.png"],
    "04_calibration_tour.py": ["calibration_obs_vs_pred.png", "calibration_residuals.png",
                               "calibration_profiles.png", "calibration_trace.png", "calibration_pair.png"],
    "05_virtual_trial_at_scale.py": ["twins_observed_vs_predicted.png", "trial_orr.png", "trial_km.png",
                                     "trial_waterfall.png"],
}


def check_image(path: str) -> None:
    """A real figure: a PNG over 5 kB that is not a single colour."""
    import matplotlib.image as mpimg

    assert os.path.isfile(path), f"{path} was not written"
    size = os.path.getsize(path)
    assert size > 5_000, f"{path}: {size} bytes, expected > 5 kB"
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    img = mpimg.imread(path)[..., :3]
    assert img.std() > 0.02, f"{path}: pixel SD {img.std():.4f}, the image is (nearly) one colour"
    colours = np.unique((img.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 20, f"{path}: only {len(colours)} distinct colours"


def test_every_notebook_is_listed_and_is_a_percent_script():
    """All notebooks are covered here, and each is a jupytext percent-format script."""
    found = sorted(f for f in os.listdir(os.path.join(ROOT, "notebooks")) if f.endswith(".py"))
    assert found == sorted(FIGURES)
    for name in found:
        with open(os.path.join(ROOT, "notebooks", name)) as f:
            text = f.read()
        assert "format_name: percent" in text and text.count("# %% [markdown]") >= 3, name
        assert "QSP_NOTEBOOK_SMALL" in text and "QSP_NOTEBOOK_FIGURES" in text, name


def test_image_check_rejects_a_blank_figure(tmp_path):
    """The image check fails on a blank (single-colour) figure of a realistic size."""
    from matplotlib.figure import Figure

    path = str(tmp_path / "blank.png")
    Figure(figsize=(6, 4)).savefig(path, dpi=110)
    with pytest.raises(AssertionError):
        check_image(path)


# The clonal notebook (about 15 s) runs in the default tier; the other four compile the
# CRS, MAPK, ODE-fit and trial machinery (35-150 s each on 2 cores) and run in the slow
# tier (`pytest -m slow`), which we run before each landing.
FAST_NOTEBOOKS = {"03_clonal_resistance.py"}


@pytest.mark.parametrize(
    "notebook",
    [nb if nb in FAST_NOTEBOOKS else pytest.param(nb, marks=pytest.mark.slow) for nb in sorted(FIGURES)],
)
def test_notebook_runs_small_and_writes_figures(notebook, tmp_path, monkeypatch):
    figures = tmp_path / "figures"
    monkeypatch.setenv("QSP_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("QSP_NOTEBOOK_FIGURES", str(figures))
    monkeypatch.setenv("QSP_NOTEBOOK_TRIAL_DIR", str(tmp_path / "trial"))
    monkeypatch.chdir(ROOT)
    runpy.run_path(os.path.join(ROOT, "notebooks", notebook), run_name="__main__")
    written = sorted(p.name for p in figures.iterdir() if p.suffix == ".png")
    assert written == sorted(FIGURES[notebook])
    for name in FIGURES[notebook]:
        check_image(str(figures / name))
