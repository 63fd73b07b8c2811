import json
from pathlib import Path

import pytest

WORKER = str(Path(__file__).with_name("evaluate_worker.py"))


def read(path):
    return json.loads((path / "result.json").read_text())


def test_two_ranks_give_the_single_process_result(launch, tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir()
    double.mkdir()
    launch([WORKER, str(single), "fresh"])
    launch([WORKER, str(double), "fresh"], nproc=2)
    # 11 samples on 2 ranks: shards of 6 and 5, none padded or repeated.
    expected, got = read(single), read(double)
    assert [r["index"] for r in got["records"]] == list(range(11))
    assert json.dumps(got["records"]) == json.dumps(expected["records"])
    assert json.dumps(got["summary"]) == json.dumps(expected["summary"])
    merged = (double / "records.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in merged] == list(range(11))
    ranks = [
        len((double / f"records.rank{r}.jsonl").read_text().splitlines())
        for r in (0, 1)
    ]
    assert ranks == [6, 5]

    # Resuming per rank recomputes nothing and loses nothing.
    before = {r: (double / f"records.rank{r}.jsonl").read_text() for r in (0, 1)}
    launch([WORKER, str(double), "resume"], nproc=2)
    after = {r: (double / f"records.rank{r}.jsonl").read_text() for r in (0, 1)}
    assert after == before
    assert json.dumps(read(double)["records"]) == json.dumps(expected["records"])


def test_command_under_torchrun_matches_one_process(launch, tmp_path):
    args = [
        "-m",
        "captum_robust.cli",
        "evaluate",
        "--model",
        "captum_robust.evaluation:demo_model",
        "--samples",
        "7",
        "--image-size",
        "16",
        "--batch-size",
        "2",
        "--steps",
        "2",
        "--k",
        "20",
        "--quiet",
        "--num-figures",
        "1",
    ]
    launch([*args, "--output", str(tmp_path / "one")])
    launch([*args, "--output", str(tmp_path / "two")], nproc=2)
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    lines_one = (tmp_path / "one" / "records.jsonl").read_text().splitlines()
    lines_two = (tmp_path / "two" / "records.jsonl").read_text().splitlines()
    # Shards batch samples differently (a batch of one on a rank, say), so
    # convolutions may round differently in the last bits; nothing else differs.
    records_one = [json.loads(line) for line in lines_one]
    records_two = [json.loads(line) for line in lines_two]
    assert records_two == [pytest.approx(r, rel=1e-5, abs=1e-6) for r in records_one]
    summary_one = one["rows"][0]["summary"]
    summary_two = two["rows"][0]["summary"]
    assert summary_two.keys() == summary_one.keys()
    for key, value in summary_one.items():
        expected = (
            value if not isinstance(value, dict) else pytest.approx(value, rel=1e-5)
        )
        assert summary_two[key] == expected
