"""The Slicer panel's background machinery: threads, child processes, the retrain pipeline."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "KDSAMExtension" / "KDSAM"))

from kdsam_core.errors import KDSAMError  # noqa: E402
from KDSAMLib import deps, jobs, retrain  # noqa: E402


def wait_for(predicate, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_background_job_reports_progress_result_error_and_cancel():
    def work(n, progress=None, should_stop=None):
        for i in range(n):
            if should_stop():
                return "stopped"
            progress(i + 1, n)
            time.sleep(0.01)
        return "finished"

    job = jobs.BackgroundJob(work, 5).start()
    assert wait_for(lambda: job.done)
    assert job.result == "finished" and job.error is None and job.fraction == 1.0

    job = jobs.BackgroundJob(work, 10_000).start()
    job.cancel()
    assert wait_for(lambda: job.done) and job.result == "stopped"

    def boom():
        raise KDSAMError("bad slice")

    job = jobs.BackgroundJob(boom, with_callbacks=False).start()
    assert wait_for(lambda: job.done) and isinstance(job.error, KDSAMError)


@pytest.mark.parametrize("line, expected", [
    ("epoch 3/10 loss 0.2", 0.3), ("step 50/200", 0.25), ('{"step": 5, "progress": 0.4}', 0.4),
    ("teacher cache:  42%|####      | 42/100", 0.42), ("nothing here", None), ("lr 1e-4", None),
])
def test_parse_progress(line, expected):
    got = jobs.parse_progress(line)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_process_job_streams_lines_and_progress(tmp_path):
    code = "import time\nfor i in range(1, 5):\n    print(f'step {i}/4', flush=True)\n    time.sleep(0.02)\n"
    job = jobs.ProcessJob([sys.executable, "-c", code], log_path=str(tmp_path / "log.txt")).start()
    lines = []
    assert wait_for(lambda: lines.extend(job.read_lines()) or job.done)
    lines += job.read_lines()
    assert lines == [f"step {i}/4" for i in range(1, 5)]
    assert job.returncode == 0 and job.progress == 1.0
    assert (tmp_path / "log.txt").read_text().splitlines() == lines


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_cancel_ends_the_whole_process_tree(tmp_path):
    pidfile = tmp_path / "child.pid"
    code = ("import subprocess, sys, time\n"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
            "print('started', flush=True)\n"
            "time.sleep(60)\n")
    job = jobs.ProcessJob([sys.executable, "-c", code]).start()
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text())
    child = int(pidfile.read_text())
    t0 = time.monotonic()
    job.cancel(grace_s=2.0)
    assert time.monotonic() - t0 < 5
    assert wait_for(lambda: job.done, 5)
    assert job.returncode != 0 and job.cancelled

    def gone():
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        # a killed grandchild is re-parented to init and may linger as a zombie until reaped
        try:
            return Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"
        except OSError:
            return True

    assert wait_for(gone, 5)


def make_data(root: Path) -> Path:
    img = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:20, 8:20] = True
    for i in range(3):
        retrain.write_training_pair(img, mask, root, f"case{i}", dataset="mine")
    return root


def test_training_stages_resume_and_validation(tmp_path):
    data = make_data(tmp_path / "data")
    plan = retrain.TrainingPlan(data_root=str(data), run_dir=str(tmp_path / "run"), distill_steps=7,
                                finetune_steps=9, device="cpu")
    stages = retrain.training_stages(plan, python="py")
    assert [s for s, _ in stages] == ["split", "cache", "distill", "finetune", "evaluate"]
    for _, argv in stages:
        assert argv[:3] == ["py", "-m", "kdsam_train.cli"]
        assert "--data-root" in argv and str(data.resolve()) in argv
    distill = dict(stages)["distill"]
    assert distill[distill.index("--steps") + 1] == "7"
    finetune = dict(stages)["finetune"]
    assert finetune[finetune.index("--student-checkpoint") + 1].endswith("distill/student_phase1.safetensors")
    # a second press of Retrain resumes: finished stages are skipped
    run = Path(plan.run_dir)
    (run / "distill").mkdir(parents=True)
    (run / "splits.json").write_text("{}")
    (run / "distill" / "student_phase1.safetensors").write_bytes(b"")
    assert [s for s, _ in retrain.training_stages(plan, python="py")] == ["cache", "finetune", "evaluate"]
    with pytest.raises(KDSAMError, match="does not exist"):
        retrain.training_stages(retrain.TrainingPlan(data_root=str(tmp_path / "nope"), run_dir=str(run)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(KDSAMError, match="images"):
        retrain.training_stages(retrain.TrainingPlan(data_root=str(tmp_path / "empty"), run_dir=str(run)))
    # ImageNet weights for the student's body go to distill alone, as an absolute path; a missing file
    # is a message before any stage runs
    assert "--backbone-weights" not in dict(stages)["distill"]
    weights = tmp_path / "resnet50-11ad3fa6.pth"
    weights.write_bytes(b"")
    plan.backbone_weights = str(weights)
    with_backbone = dict(retrain.training_stages(plan, python="py", skip_done=False))
    distill = with_backbone["distill"]
    assert distill[distill.index("--backbone-weights") + 1] == str(weights.resolve())
    assert all("--backbone-weights" not in argv for name, argv in with_backbone.items() if name != "distill")
    plan.backbone_weights = str(tmp_path / "nope.pth")
    with pytest.raises(KDSAMError, match="ImageNet weights file .*nope.pth does not exist"):
        retrain.training_stages(plan, python="py")


def test_the_training_cli_accepts_the_panels_options(tmp_path):
    """Every option the panel passes exists in kdsam-train's parser (no run, only parsing)."""
    cli = pytest.importorskip("kdsam_train.cli")
    data = make_data(tmp_path / "data")
    (tmp_path / "r50.pth").write_bytes(b"")
    plan = retrain.TrainingPlan(data_root=str(data), run_dir=str(tmp_path / "run"), max_minutes=1.5,
                                backbone_weights=str(tmp_path / "r50.pth"))
    parser = cli.build_parser()
    for name, argv in retrain.training_stages(plan, python="py"):
        args = parser.parse_args(argv[3:])
        assert args.command == name


def test_pipeline_runs_stages_in_order_and_stops_on_failure(tmp_path):
    ok = [sys.executable, "-c", "print('epoch 1/1')"]
    bad = [sys.executable, "-c", "import sys; print('oops'); sys.exit(3)"]
    p = retrain.TrainingPipeline([("a", ok), ("b", ok)], cwd=str(tmp_path / "run")).start()
    log = []
    assert wait_for(lambda: log.extend(p.poll()) or p.done)
    assert p.succeeded and p.progress == 1.0
    assert "[a] epoch 1/1" in log and "[b] done" in log

    p = retrain.TrainingPipeline([("a", bad), ("b", ok)], cwd=str(tmp_path / "run")).start()
    log = []
    assert wait_for(lambda: log.extend(p.poll()) or p.done)
    assert not p.succeeded and "exit code 3" in p.failed and not any(line.startswith("[b]") for line in log)

    slow = [sys.executable, "-c", "import time; print('x', flush=True); time.sleep(30)"]
    p = retrain.TrainingPipeline([("a", slow)], cwd=str(tmp_path / "run")).start()
    assert wait_for(lambda: p.current and p.current.running)
    p.cancel()
    log = []
    assert wait_for(lambda: log.extend(p.poll()) or p.done, 10)
    assert p.cancelled and not p.succeeded and any("resume" in line for line in log)


def test_metrics_are_found_and_formatted(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"student": {"box": {"dice": 0.91, "n": 12}}}))
    m = retrain.find_metrics(tmp_path)
    text = retrain.format_metrics(m)
    assert "student/box/dice: 0.9100" in text and "student/box/n: 12" in text
    assert retrain.format_metrics({}) == "no metrics were reported"
    assert retrain.find_metrics(tmp_path / "nothing") == {}


def test_deps_find_the_code_and_report_missing(tmp_path, monkeypatch):
    root = Path(__file__).resolve().parents[1]
    assert deps.find_code_root(root / "KDSAMExtension" / "KDSAM") == root
    assert deps.find_code_root(tmp_path) is None
    dirs = deps.code_dirs()
    assert str(root) in dirs
    missing = deps.missing_packages()
    assert missing["code"] == [] and missing["torch"] == []
    assert deps.describe_missing({"torch": [], "pip": [], "code": []}) == ""
    assert "segment-anything" in deps.describe_missing({"torch": ["torch"], "pip": ["segment-anything==1.0"],
                                                        "code": []})
    env = retrain.training_env(["/a", "/b"])
    assert env["PYTHONPATH"].split(os.pathsep)[:2] == ["/a", "/b"]
