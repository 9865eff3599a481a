"""`bench.speed`: warm-up exclusion, OOM back-off, MAC counting and MFU, ratios, targets, outputs.

No test asserts a measured time: timing tests run on a fake clock that the model advances.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import pytest

from bench.presets import get_preset
from bench.recipe import Recipe
from bench.speed.backoff import OutOfMemory, run_with_backoff
from bench.speed.flops import model_gmacs, resolve_counter
from bench.speed.output import CSV_COLUMNS, table, write_outputs
from bench.speed.peaks import find_peak, mfu
from bench.speed.ratios import add_ratios
from bench.speed.suite import Case, Settings, measure_case, run_suite
from bench.speed.targets import check_targets
from bench.speed.workload import Workload, method_workload
from methods import get_method, method_output

CPU = torch.device("cpu")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedModel(nn.Module):
    """A linear classifier whose forward advances a fake clock (slow for the first `slow_calls` calls
    of each mode) and runs out of memory above `max_batch`."""

    def __init__(self, clock: FakeClock, slow_calls: int = 0, max_batch: int = 1 << 30, error: str | None = None):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.clock, self.slow_calls, self.max_batch, self.error = clock, slow_calls, max_batch, error
        self.calls = {True: 0, False: 0}
        self.batches: list[int] = []

    def forward(self, images, targets=None):
        self.batches.append(len(images))
        if self.error:
            raise RuntimeError(self.error)
        if len(images) > self.max_batch:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(images)} GiB")
        self.calls[self.training] += 1
        self.clock.now += 100.0 if self.calls[self.training] <= self.slow_calls else 1.0
        logits = self.fc(images.mean(dim=(2, 3)))
        if targets is None:
            return method_output(logits)
        loss = F.cross_entropy(logits, targets)
        return method_output(logits, loss=loss, losses={"ce": loss})


def scripted_workload(model: ScriptedModel, batch: int = 4) -> Workload:
    recipe = Recipe(img_size=8, resize_size=8, batch_size=batch)
    return Workload("scripted", "fused", recipe, 4, lambda: model,
                    lambda m: [{"params": list(m.parameters())}], lambda: model)


def test_warmup_steps_are_excluded_from_the_rates():
    clock = FakeClock()
    model = ScriptedModel(clock, slow_calls=3)
    settings = Settings(CPU, "no", warmup=3, steps=4, counter="torch", clock=clock)
    row = measure_case(Case(scripted_workload(model, batch=4)), settings)
    assert row["error"] is None
    for phase in ("train", "infer"):
        assert row[f"{phase}_timed_steps"] == 4
        assert row[f"{phase}_warmup_steps"] == 3
        assert row[f"{phase}_step_ms"] == [1000.0] * 4  # fake seconds: every slow warm-up step left out
        assert row[f"{phase}_step_ms_median"] == 1000.0 and row[f"{phase}_step_ms_p90"] == 1000.0
        assert row[f"{phase}_samples_per_sec"] == 4.0
        assert row[f"{phase}_first_step_s"] == 100.0
    assert model.calls == {True: 8, False: 7}  # warm-up + timed, and one profiled training step


def test_out_of_memory_backs_off_down_timms_schedule():
    clock = FakeClock()
    model = ScriptedModel(clock, max_batch=5)
    settings = Settings(CPU, "no", warmup=1, steps=2, counter="torch", clock=clock)
    row = measure_case(Case(scripted_workload(model, batch=16)), settings)
    assert row["error"] is None
    assert row["batch_size"] == 16
    for phase in ("train", "infer"):
        assert row[f"{phase}_batches_tried"] == [16, 12, 8, 6, 4]  # timm.utils.decay_batch_step
        assert row[f"{phase}_batch_size"] == 4
        assert row[f"{phase}_samples_per_sec"] == 4.0


def test_out_of_memory_at_every_batch_is_a_row_error():
    clock = FakeClock()
    row = measure_case(Case(scripted_workload(ScriptedModel(clock, max_batch=0), batch=3)),
                       Settings(CPU, "no", warmup=1, steps=1, counter="torch", clock=clock))
    assert row.get("train_samples_per_sec") is None
    assert "train: OutOfMemory" in row["error"] and "(3, 2, 1)" in row["error"]


@pytest.mark.parametrize("message", ["CUDA error: an illegal memory access was encountered", "shape mismatch"])
def test_errors_other_than_a_usable_out_of_memory_are_not_retried(message):
    tried = []

    def phase(batch):
        tried.append(batch)
        raise RuntimeError(message)

    with pytest.raises(RuntimeError, match=message.split(":")[0]):
        run_with_backoff(phase, 16, CPU)
    assert tried == [16]


def test_backoff_gives_up_below_one():
    with pytest.raises(OutOfMemory):
        run_with_backoff(lambda b: (_ for _ in ()).throw(torch.OutOfMemoryError("out of memory")), 2, CPU)


def tiny_vit_macs(img: int, classes: int, patch: int = 8, dim: int = 64, depth: int = 4) -> int:
    """Multiply-accumulates of the `tiny` ViT by hand: patch embedding, blocks (qkv, q·k, attn·v, proj,
    MLP), head."""
    n = (img // patch) ** 2 + 1
    block = n * dim * 3 * dim + 2 * n * n * dim + n * dim * dim + 2 * n * dim * 4 * dim
    return (img // patch) ** 2 * 3 * patch * patch * dim + depth * block + dim * classes


@pytest.mark.parametrize("counter", ["torch", "deepspeed"])
def test_counters_give_the_model_macs_in_both_attention_modes(counter, single_thread):
    if counter == "deepspeed":
        pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed")
    for attention in ("fused", "eager"):
        workload = method_workload(get_method("vit"), None, attention, get_preset("tiny"), None, 32, 2, 10, {})
        gmacs = model_gmacs(workload.build, 32, 10, CPU, resolve_counter(counter))
        assert gmacs["infer_gmacs"] * 1e9 == pytest.approx(tiny_vit_macs(32, 10), rel=1e-9)
        assert gmacs["train_gmacs"] == pytest.approx(gmacs["infer_gmacs"], rel=1e-9)


def test_mfu_comes_from_the_counted_macs_and_the_peak(single_thread):
    workload = method_workload(get_method("vit"), None, "fused", get_preset("tiny"), None, 32, 2, 10, {})
    settings = Settings(CPU, "no", warmup=1, steps=2, counter="torch", peak_tflops=0.5)
    [row] = run_suite([Case(workload)], settings, log=lambda text: None)
    macs = tiny_vit_macs(32, 10)
    assert row["infer_gmacs"] * 1e9 == pytest.approx(macs)
    assert row["train_mfu"] == pytest.approx(3 * 2 * macs * row["train_samples_per_sec"] / 0.5e12)
    assert row["infer_mfu"] == pytest.approx(2 * macs * row["infer_samples_per_sec"] / 0.5e12)
    assert mfu(10.0, 1.0, None, train=True) is None  # no peak, no MFU


def test_peak_table_matches_device_names():
    assert find_peak("NVIDIA H100 80GB HBM3").name == "H100 SXM"
    assert find_peak("NVIDIA H100 PCIe").name == "H100 PCIe"
    assert find_peak("NVIDIA H200").bf16 == 989.4
    assert find_peak("NVIDIA A100-SXM4-80GB").bf16 == 312.0
    assert find_peak("NVIDIA L40S").name == "L40S" and find_peak("NVIDIA L40").name == "L40"
    assert find_peak("NVIDIA L4").name == "L4" and find_peak("NVIDIA A10").name == "A10"
    assert find_peak("NVIDIA GeForce RTX 4090").bf16 == 165.2
    assert find_peak("Tesla V100-SXM2-16GB").bf16 is None
    assert find_peak("NVIDIA GeForce RTX 3090 Ti") is None
    assert find_peak("Some Accelerator") is None


def speed_row(method, attention, train, infer=None, memory=None, data=None, **extra):
    return {"method": method, "attention": attention, "compile": False, "img_size": 448, "batch_size": 16,
            "train_samples_per_sec": train, "infer_samples_per_sec": infer, "train_peak_allocated_mb": memory,
            "data_samples_per_sec": data, **extra}


def test_ratios_pair_eager_with_fused_and_methods_with_vit():
    rows = add_ratios([
        speed_row("vit", "eager", 100.0, 300.0, 1000.0), speed_row("vit", "fused", 150.0, 600.0, 800.0, data=147.0),
        speed_row("ffvt", "eager", 40.0, 100.0, 4000.0), speed_row("ffvt", "fused", 135.0, 500.0, 1000.0),
    ])
    vit_fused, ffvt_eager, ffvt_fused = rows[1], rows[2], rows[3]
    assert ffvt_fused["train_speedup_vs_eager"] == pytest.approx(135 / 40)
    assert ffvt_fused["infer_speedup_vs_eager"] == pytest.approx(5.0)
    assert ffvt_fused["train_memory_vs_eager"] == pytest.approx(0.25)
    assert ffvt_fused["train_vs_vit"] == pytest.approx(135 / 150)  # against fused ViT, not eager
    assert ffvt_eager["train_vs_vit"] == pytest.approx(0.4)
    assert vit_fused["data_ratio"] == pytest.approx(0.98) and ffvt_fused["data_ratio"] is None


def test_targets_are_judged_only_at_the_paper_setting():
    rows = add_ratios([
        speed_row("vit", "eager", 100.0), speed_row("vit", "fused", 150.0, train_mfu=0.45),
        speed_row("ramstrans", "eager", 20.0, memory=2000.0), speed_row("ramstrans", "fused", 60.0, memory=1500.0),
    ])
    lines = check_targets(rows, "base", "bf16")
    assert any(line.startswith("met") and "vit" in line and "MFU" in line for line in lines)
    assert any(line.startswith("met") and "ramstrans" in line and "fused / eager >= 2" in line for line in lines)
    assert any(line.startswith("MISSED") and "ramstrans" in line and "0.45" in line for line in lines)  # 0.40
    assert all("ramstrans" not in line or "0.85" not in line for line in lines)
    assert check_targets(rows, "tiny", "no")[0].startswith("targets: not judged")


def test_outputs_keep_the_schema_and_the_table_shows_the_ratio(tmp_path):
    rows = add_ratios([speed_row("vit", "eager", 100.0, 300.0), speed_row("vit", "fused", 150.0, 600.0)])
    for row in rows:
        row.update(train_batch_size=16, train_step_ms=[1.0, 2.0])
    text = table(rows, cuda=False)
    paths = write_outputs(rows, tmp_path, "speed-x", {"command": "c", "device_label": "cpu"}, text, ["note"])
    header = paths[0].read_text().splitlines()[0].split(",")
    assert header == list(CSV_COLUMNS)
    assert "train_step_ms" not in header  # per-step times go to the JSON
    assert '"train_step_ms": [' in paths[1].read_text()
    assert "fused/eager train" in text and "1.50" in text
    assert paths[2].read_text().count("| vit") == 2


class LoggedModel(ScriptedModel):
    """A scripted model that writes its name to a shared log at every training/inference call."""

    def __init__(self, clock: FakeClock, log: list, name: str, **kw):
        super().__init__(clock, **kw)
        self.log, self.name = log, name

    def forward(self, images, targets=None):
        self.log.append((self.name, self.training))
        return super().forward(images, targets)


def test_interleaved_cases_alternate_step_by_step_and_a_failure_leaves_the_rotation():
    clock, log = FakeClock(), []
    models = {"a": LoggedModel(clock, log, "a", slow_calls=2), "b": LoggedModel(clock, log, "b"),
              "c": LoggedModel(clock, log, "c", error="shape mismatch")}
    cases = []
    for name, model in models.items():
        workload = scripted_workload(model)
        workload.attention = name  # three "modes" of one method: one group
        cases.append(Case(workload))
    settings = Settings(CPU, "no", warmup=2, steps=3, counter="torch", clock=clock, interleave="modes")
    rows = run_suite(cases, settings, log=lambda text: None)
    assert [r["attention"] for r in rows] == ["a", "b", "c"]
    training = [name for name, train in log if train][1:]  # the first: the MAC count's (case a's model, slow)
    assert training[:3] == ["a", "b", "c"] and training[3:11] == ["a", "b"] * 4  # c dropped out after its step
    a, b, c = rows
    assert a["train_step_ms"] == [1000.0] * 3 and a["train_first_step_s"] == 100.0  # the slow first step left out
    assert a["train_samples_per_sec"] == b["train_samples_per_sec"] == 4.0 and a["infer_timed_steps"] == 3
    assert a["error"] is None and b["error"] is None and a["train_saved_mb"] is not None
    assert "train: RuntimeError: shape mismatch" in c["error"] and c.get("train_samples_per_sec") is None


def test_step_memory_counts_saved_activations_once_and_leaves_parameters_out():
    from bench.speed.activations import replay_peak, step_memory

    assert replay_peak([(2, -5), (0, 10), (1, 4), (3, 1)]) == 14
    model = nn.Sequential(nn.Linear(100, 1000), nn.ReLU(), nn.Linear(1000, 10))
    x = torch.randn(64, 100)
    memory = step_memory(lambda: model(x).sum().backward(), model, CPU)
    # the input (saved by the first matmul) and the ReLU output (saved by ReLU and the second matmul)
    assert memory["train_saved_mb"] * 2**20 == 64 * 100 * 4 + 64 * 1000 * 4
    assert memory["train_peak_live_mb"] * 2**20 >= 64 * 1000 * 4 * 2  # pre-activation and ReLU output


def test_eager_attention_saves_its_maps_for_backward_and_fused_does_not(single_thread):
    memory = {}
    for attention in ("eager", "fused"):
        workload = method_workload(get_method("vit"), None, attention, get_preset("tiny"), None, 64, 4, 10, {})
        settings = Settings(CPU, "no", warmup=1, steps=1, counter="torch")
        [row] = run_suite([Case(workload)], settings, log=lambda text: None)
        memory[attention] = row["train_saved_mb"] * 2**20
    maps = 4 * 4 * 65 * 65 * 4 * 4  # batch 4, 4 heads, 65 tokens, float32, 4 blocks
    logsumexp = 4 * 4 * 65 * 4 * 4  # what fused attention saves instead: one float a row
    assert memory["eager"] - memory["fused"] == maps - logsumexp


class WithRollout(nn.Module):
    """A ViT whose forward also computes a rollout statistic from its blocks' q/k."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, images, targets=None):
        from methods.attention import AttentionCapture

        with AttentionCapture(self.classifier.vit.blocks) as capture:
            out = self.classifier(images, targets)
        capture.statistics.rollout_row(capture.layers)
        capture.statistics.residual_rollout_column_mean(capture.layers)
        return out


@pytest.mark.parametrize("counter", ["torch", "deepspeed"])
def test_model_macs_leave_the_attention_statistics_out(counter, single_thread):
    if counter == "deepspeed":
        pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed")
    workload = method_workload(get_method("vit"), None, "fused", get_preset("tiny"), None, 32, 2, 10, {})
    gmacs = model_gmacs(lambda: WithRollout(workload.build()), 32, 10, CPU, resolve_counter(counter))
    assert gmacs["infer_gmacs"] * 1e9 == pytest.approx(tiny_vit_macs(32, 10), rel=1e-9)
