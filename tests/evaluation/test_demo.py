"""The demo end to end at a tiny size: verdicts, chart and a moving progress bar."""

import pytest

from captum_robust.evaluation import DemoSettings, run_demo

TINY = DemoSettings(
    image_size=16,
    train_samples=32,
    test_samples=8,
    natural_epochs=1,
    finetune_epochs=1,
    batch_size=32,
    attack_steps=2,
    k=20,
    ig_steps=2,
    ig_sum_norm_steps=2,
    ig_sum_norm_attack_steps=1,
    attack_batch_size=4,
)


def test_tiny_demo_reports_verdicts_chart_and_moves_per_batch(tmp_path, capsys):
    lines = []
    rows = run_demo(tmp_path, settings=TINY, log=lines.append, progress=True)
    assert len(rows) == 16
    page = (tmp_path / "report.html").read_text()
    # One epoch on 32 images leaves too few correct samples for verdicts here;
    # the verdict sentences are tested on hand-made summaries.
    assert 'id="summary-chart"' in page
    bar = capsys.readouterr().err
    # 16 evaluations of 8 samples in batches of 4: the bar counts 128 samples
    # and passes through 4 of them after the first batch.
    assert "attacking" in bar and "4/128" in bar and "128/128" in bar
    assert "| 1/1 [" not in bar.split("attacking", 1)[1]


def test_new_settings_are_checked():
    for field in ("ig_sum_norm_steps", "ig_sum_norm_attack_steps", "attack_batch_size"):
        with pytest.raises(ValueError, match=f"`{field}` must be >= 1"):
            DemoSettings(**{field: 0})
