"""ModelManager.prefetch: the job's own load run early, shared with a concurrent load of the same file,
never holding up other loads, skipped when RAM is short, and never raising."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import nodes.models.manager as manager_module
import nodes.models.prefetch as prefetch_module
from nodes.base.errors import ModelLoadError
from nodes.models.manager import ModelManager
from nodes.models.prefetch import predicted_bytes
from nodes.models.random_checkpoint import write_random_checkpoint


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("prefetch_ckpts")
    return tuple(write_random_checkpoint(folder / f"{n}.safetensors", "sd1", seed=i, size="tiny")  # type: ignore
                 for i, n in enumerate("ab"))


class Held:
    """Wraps the checkpoint reader so a test holds a load open until it lets go."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hold: Path) -> None:
        self.real = manager_module.load_checkpoint
        self.hold = hold
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[Path] = []
        monkeypatch.setattr(manager_module, "load_checkpoint", self)

    def __call__(self, path: Path, **kw):
        self.calls.append(path)
        if path == self.hold:
            self.entered.set()
            assert self.release.wait(30), "the test never released the load"
        return self.real(path, **kw)


def waiting_in_manager(thread: threading.Thread) -> bool:
    """Whether `thread` is blocked in ModelManager._cached waiting for another thread's load of the same key."""
    frame = sys._current_frames().get(thread.ident)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return "_cached" in names and "wait" in names


def in_thread(fn) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def test_a_load_during_a_prefetch_of_the_same_file_waits_for_it_and_gets_the_same_object(ckpts, monkeypatch):
    a, _ = ckpts
    manager = ModelManager()
    held = Held(monkeypatch, a)
    pre, pre_out = in_thread(lambda: manager.prefetch([a], lambda: manager.load_checkpoint(a)))
    assert held.entered.wait(30)
    job, job_out = in_thread(lambda: manager.load_checkpoint(a))
    while not waiting_in_manager(job):
        assert job.is_alive(), "the job's load finished while the same file was still being prefetched"
        time.sleep(0.001)
    held.release.set()
    pre.join(30)
    job.join(30)
    assert pre_out == ["loaded"]
    assert held.calls == [a]  # one read of the file
    assert job_out[0] is manager.load_checkpoint(a)
    assert [r.prefetch for r in manager.loads] == [True]


def test_a_prefetch_under_way_does_not_hold_up_the_jobs_load_of_another_file(ckpts, monkeypatch):
    a, b = ckpts
    manager = ModelManager()
    held = Held(monkeypatch, b)
    pre, pre_out = in_thread(lambda: manager.prefetch([b], lambda: manager.load_checkpoint(b)))
    assert held.entered.wait(30)
    job, job_out = in_thread(lambda: manager.load_checkpoint(a))
    job.join(60)
    finished_first = not job.is_alive()
    held.release.set()
    pre.join(30)
    assert finished_first, "the job's load waited for the prefetch of another file"
    assert job_out and pre_out == ["loaded"]
    assert [(Path(r.paths[0]).name, r.prefetch) for r in manager.loads] == [("a.safetensors", False),
                                                                            ("b.safetensors", True)]


def test_a_prefetch_that_fails_raises_nothing_caches_nothing_and_the_job_still_gets_its_error(tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    manager = ModelManager()
    outcome = manager.prefetch([broken], lambda: manager.load_checkpoint(broken))
    assert outcome.startswith("failed") and manager.loaded_count() == 0
    with pytest.raises(ModelLoadError, match="broken.safetensors"):
        manager.load_checkpoint(broken)


def test_a_prefetch_is_skipped_when_the_file_does_not_fit_in_free_ram(ckpts, monkeypatch):
    a, _ = ckpts
    manager = ModelManager()
    monkeypatch.setattr(prefetch_module, "system_memory", lambda: (8 * 1024**3, 2 * 1024**3))  # 2 GiB free
    outcome = manager.prefetch([a], lambda: manager.load_checkpoint(a))
    assert outcome.startswith("skipped") and manager.loaded_count() == 0
    monkeypatch.setattr(prefetch_module, "system_memory", lambda: (8 * 1024**3, 6 * 1024**3))
    assert manager.prefetch([a], lambda: manager.load_checkpoint(a)) == "loaded"
    assert manager.prefetch([a], lambda: manager.load_checkpoint(a)) == "cached"


def test_the_predicted_size_counts_half_precision_weights_widened_to_the_load_dtype(tmp_path):
    path = tmp_path / "half.safetensors"
    save_file({"w": torch.zeros(10, 30, dtype=torch.float16), "ids": torch.zeros(7, dtype=torch.int64)}, path)
    assert predicted_bytes([path], 4) == 300 * 4 + 7 * 8
    assert predicted_bytes([path], 2) == 300 * 2 + 7 * 8
    pickled = tmp_path / "half.ckpt"
    pickled.write_bytes(b"x" * 1000)
    assert predicted_bytes([pickled], 4) == 2000  # unknown contents: room for every float to double


@pytest.mark.gpu
def test_on_a_gpu_a_prefetch_lands_on_the_offload_device_and_evicts_nothing(ckpts):
    a, b = ckpts
    manager = ModelManager()
    model_a, _, _ = manager.load_checkpoint(a)
    with manager.use(model_a.unet):
        resident = manager.resident_bytes()
        assert manager.prefetch([b], lambda: manager.load_checkpoint(b)) == "loaded"
        assert manager.resident_bytes() == resident
    model_b, _, _ = manager.load_checkpoint(b)
    assert next(model_b.unet.parameters()).device == manager.offload_device
