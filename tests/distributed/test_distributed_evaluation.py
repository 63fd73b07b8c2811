import json
from pathlib import Path

import pytest
import torch

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
        # Scores may differ by the records' abs=1e-6; the spread of two close
        # scores and a t-interval with one degree of freedom (t = 12.7) magnify
        # that, so intervals get an absolute tolerance as well.
        expected = (
            value
            if not isinstance(value, dict)
            else pytest.approx(value, rel=1e-5, abs=1e-5)
        )
        assert summary_two[key] == expected


def evaluated(path, ranks):
    return sorted(
        i for r in ranks for i in json.loads((path / f"evaluated.{r}.json").read_text())
    )


def cut(path, keep, partial=True):
    """Keep the first ``keep`` lines of a record file, plus half of the next."""
    lines = path.read_text().splitlines(keepends=True)
    tail = lines[keep][: len(lines[keep]) // 2] if partial and keep < len(lines) else ""
    path.write_text("".join(lines[:keep]) + tail)


def test_resume_with_another_number_of_processes(launch, tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    launch([WORKER, str(reference), "fresh"])
    expected = json.dumps(read(reference)["records"])

    # Two ranks stop early (rank 0 after 3 records, rank 1 after 2, both in the
    # middle of a write); one process finishes the job.
    run = tmp_path / "two-then-one"
    run.mkdir()
    launch([WORKER, str(run), "fresh"], nproc=2)
    kept = set()
    for r, keep in ((0, 3), (1, 2)):
        path = run / f"records.rank{r}.jsonl"
        kept |= {
            json.loads(line)["index"] for line in path.read_text().splitlines()[:keep]
        }
        cut(path, keep)
    (run / "records.jsonl").unlink()
    launch([WORKER, str(run), "resume"])
    assert json.dumps(read(run)["records"]) == expected
    assert evaluated(run, [0]) == sorted(set(range(11)) - kept)
    merged = [
        json.loads(line)["index"]
        for line in (run / "records.jsonl").read_text().splitlines()
    ]
    assert merged == list(range(11))

    # One process stops after 4 records; two ranks finish the job.
    run = tmp_path / "one-then-two"
    run.mkdir()
    launch([WORKER, str(run), "fresh"])
    cut(run / "records.jsonl", 4)
    launch([WORKER, str(run), "resume"], nproc=2)
    assert json.dumps(read(run)["records"]) == expected
    assert evaluated(run, [0, 1]) == list(range(4, 11))
    shards = [
        [
            json.loads(line)["index"]
            for line in (run / f"records.rank{r}.jsonl").read_text().splitlines()
        ]
        for r in (0, 1)
    ]
    assert shards == [[0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9]]

    # A fresh single-process run in the same folder removes the rank files, so
    # that a later resume cannot take records of the earlier run.
    launch([WORKER, str(run), "fresh"])
    assert not list(run.glob("records.rank*.jsonl"))


def test_loader_order_of_a_user_sampler_is_kept(launch, tmp_path):
    from captum_robust.datasets import make_silhouette_digits

    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir()
    double.mkdir()
    launch([WORKER, str(single), "fresh", "shuffled"])
    launch([WORKER, str(double), "fresh", "shuffled"], nproc=2)
    expected, got = read(single)["records"], read(double)["records"]
    # drop_last: the last short batch of the 11 permuted samples is left out.
    assert [r["index"] for r in expected] == list(range(9))
    # Shards batch the samples differently from one process (with a different
    # neighbour in each batch), so convolutions round differently in the last
    # bits of the silhouette scores; nothing else differs.
    assert got == [pytest.approx(r, rel=1e-5, abs=1e-6) for r in expected]
    labels = make_silhouette_digits(11, split="test", image_size=16, seed=3).labels
    permutation = torch.randperm(11, generator=torch.Generator().manual_seed(5))
    assert [r["label"] for r in got] == labels[permutation[:9]].tolist()
