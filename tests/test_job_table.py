"""``batchsizer reproduce --job-table FILE.csv``: a user's own jobs, every method, the same outputs."""

from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner

from batchsizer.cli import cli
from batchsizer.errors import ConfigError
from batchsizer.repro.job_table import read_job_table


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_own_jobs_run_with_every_method(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("batch_size,throughput,mean_w,peak_w,idle_w\n1,20,80,110,50\n4,60,110,150,50\n"
                     "16,120,140,190,50\n64,160,160,220,50\n")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"model,dataset,cap_w,items,device\nRes50,imagenet,150,500,\nmobv2,Caltech,120,,sim:v100\n"
                    f",,170,2000,table:{table}\n")
    out = tmp_path / "out"
    res = invoke("reproduce", "--job-table", str(jobs), "--seeds", "1", "--items", "400", "--workers", "1",
                 "--no-figures", "--quiet", "--out", str(out))
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert {r["job"] for r in rows} == {"1", "2", "3"}
    assert [r["cap_w"] for r in rows if r["method"] == "oracle"] == ["150.0", "120.0", "170.0"]
    assert {"oracle_fraction_mean", "over_cap_fraction_mean"} <= set(rows[0])
    methods = {r["method"] for r in rows if r["job"] == "1"}
    assert {"oracle", "batchsizer", "adaptive"} <= methods
    oracle = [r for r in rows if r["method"] == "oracle"]
    assert all(float(r["oracle_fraction_mean"]) == pytest.approx(1.0) for r in oracle)
    # the table job ran on the table: its oracle's throughput is one of the table's (160 items/s at most)
    assert 0 < float(oracle[2]["throughput_mean"]) <= 161


def test_jobs_are_read_and_checked(tmp_path):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("cap_w,model,dataset\n150,resnet50,imagenet\n")
    [job] = read_job_table(jobs, "v100", 123)
    assert (job.id, job.model, job.dataset, job.cap_w, job.gpu, job.items) == (1, "Res50", "imagenet", 150, "v100", 123)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is empty"),
        ("model,dataset\nRes50,imagenet\n", "missing column cap_w"),
        ("model,dataset,cap_w\n", "no jobs"),
        ("model,dataset,cap_w\nRes50,imagenet,lots\n", "line 2, column cap_w: 'lots' is not a number"),
        ("model,dataset,cap_w\nRes50,imagenet,-5\n", "must be above 0"),
        ("model,dataset,cap_w\nvgg,imagenet,100\n", "line 2, column model: unknown simulated model 'vgg'"),
        ("model,dataset,cap_w\nRes50,coco,100\n", "line 2, column dataset"),
        ("model,dataset,cap_w,items\nRes50,imagenet,100,0\n", "column items: must be at least 1"),
        ("model,dataset,cap_w,device\nRes50,imagenet,100,sim:k80\n", "column device: 'sim:k80'"),
        ("model,dataset,cap_w,device\n,,100,table:nope.csv\n", "column device: device: nope.csv: no such file"),
    ],
)
def test_bad_job_tables_are_one_line(tmp_path, text, says):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(text)
    res = invoke("reproduce", "--job-table", str(jobs), "--out", str(tmp_path / "o"), "--quiet")
    assert res.exit_code == 2
    assert res.output.startswith(f"error: job-table: {jobs}: ") and says in res.output, res.output
    assert res.output.count("\n") == 1 and not (tmp_path / "o").exists()


def test_missing_job_table_and_jobs_together(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        read_job_table(tmp_path / "none.csv")
    with pytest.raises(ConfigError, match="is a folder"):
        read_job_table(tmp_path)
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("model,dataset,cap_w\nRes50,imagenet,100\n")
    res = invoke("reproduce", "--job-table", str(jobs), "--jobs", "1,2", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and res.output.startswith("error: jobs: ")
