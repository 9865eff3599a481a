"""`bench.py speed`: training and inference throughput, memory and MFU of every method, eager beside fused.

See `bench.speed` for what is measured and how; README "Performance" for the committed numbers.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from bench.commands.common import PRECISIONS, add_data_args, data_options, method_specs
from bench.errors import UsageError

COMPILE_AXIS = {"off": False, "on": True}
DEFAULT_STEPS = {"cuda": (10, 30), "cpu": (3, 10)}  # (warm-up, timed) per device type


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to measure")
    g.add_argument("--methods", default="all", help="comma list of methods (name or name:variant), or 'all' (default)")
    g.add_argument("--attention", default="eager,fused",
                   help="attention modes measured side by side for every method: eager (explicit maps and the "
                        "originals' statistics) and/or fused (fgbench's fast path); default eager,fused")
    g.add_argument("--compile", default="off", metavar="{off,on}[,...]",
                   help="torch.compile axis: off, on, or off,on (compile time is excluded and reported apart)")
    g.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    g.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune (default: torch's)")
    g.add_argument("--preset", default="tiny", help="tiny (CPU scale), base (ViT-B/16), base32, base_r50, base_r50_timm")
    g.add_argument("--img-size", default=None, metavar="S[,S...]",
                   help="image sizes (default: the preset's; 384,448 for base presets; the recipe's with --with-data)")
    g.add_argument("--batch-size", default=None, metavar="B[,B...]",
                   help="per-device batches (default: the preset's; 8,16 for base presets; the recipe's with --with-data)")
    g.add_argument("--resize-size", type=int, default=None, help="Resize((R, R)) before the crop (--with-data only)")
    g.add_argument("--precision", choices=PRECISIONS, default="no", help="autocast precision (default no)")
    g.add_argument("--num-classes", type=int, default=200, help="classifier size for synthetic labels (default 200)")
    g.add_argument("--opt", action="append", default=[], metavar="[METHOD.]KEY=VALUE",
                   help="method option as in `bench.py run` (not attention: use --attention)")
    t = p.add_argument_group("timing")
    t.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    t.add_argument("--threads", type=int, default=None,
                   help="CPU intra-op threads (default on a CPU: 1, stable on a shared machine; 0: torch's default)")
    t.add_argument("--clock", default="auto", metavar="{auto,thread,wall}",
                   help="step timer on a CPU: thread (this thread's CPU time: the work done, whatever else the "
                        "machine runs; exact with one thread), wall, or auto (default: thread at one thread, else "
                        "wall). A GPU is always timed by CUDA events or synchronised wall time")
    t.add_argument("--interleave", default=None, metavar="{modes,all,off}",
                   help="alternate the steps of cases one by one: modes (the attention modes of each method; "
                        "default on a CPU), all (every case of one size and batch), off (case after case, with "
                        "out-of-memory back-off; default on a GPU)")
    t.add_argument("--warmup", type=int, default=None, help="untimed steps per phase (default 10 on a GPU, 3 on a CPU)")
    t.add_argument("--steps", type=int, default=None, help="timed steps per phase (default 30 on a GPU, 10 on a CPU)")
    t.add_argument("--flop-counter", default="auto", metavar="{auto,deepspeed,torch}",
                   help="MAC counter: DeepSpeed's flops profiler (auto when installed) or torch's FlopCounterMode")
    t.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense peak TFLOP/s for MFU (default: the built-in table of GPUs)")
    d = p.add_argument_group("end to end")
    d.add_argument("--with-data", default=None, metavar="DATASET",
                   help="also train each case fed by DATASET's loader (decode-and-resize cache) and report the "
                        "ratio to the synthetic rate; the dataset card's recipe applies to every case")
    d.add_argument("--workers", type=int, default=None, help="loader worker processes (default: 8 on a GPU, 0 on a CPU)")
    d.add_argument("--cache-dir", type=Path, default=None, help="decode-and-resize cache folder")
    d.add_argument("--no-cache", action="store_true", help="decode and resize every image every time")
    add_data_args(p)
    p.add_argument("--results-dir", type=Path, default=Path("results/speed"),
                   help="where the CSV, JSON and Markdown go (default: results/speed)")


def parse_list(text: str, what: str, choices=None, cast=str) -> list:
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    try:
        values = [cast(item) for item in items]
    except ValueError:
        raise UsageError(f"{what} expects a comma list like {'384,448' if cast is int else 'a,b'}, got {text!r}") from None
    if not values:
        raise UsageError(f"{what} is empty")
    if choices is not None and any(v not in choices for v in values):
        raise UsageError(f"{what} takes {', '.join(choices)} (comma-separated), got {text!r}")
    if cast is int and any(v < 1 for v in values):
        raise UsageError(f"{what} expects positive integers, got {text!r}")
    return list(dict.fromkeys(values))


def resolve_device(name: str | None):
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in ("cuda", "cpu"):
        raise UsageError(f"--device must be cuda or cpu, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible here; use --device cpu")
    return torch.device(name)


def device_label(env: dict, device) -> str:
    import torch

    threads = torch.get_num_threads()
    if device.type == "cuda":
        return f"{env['device_name']} (CUDA {env.get('cuda')})"
    return f"CPU ({env['cpu']}, {env['cpu_count']} cores, {threads} thread{'s' if threads > 1 else ''})"


CLOCKS = ("auto", "thread", "wall")


def step_clock(name: str, device):
    """(label, clock) timing a step on this device: thread CPU time or wall time (`--clock`)."""
    import time

    import torch

    if name not in CLOCKS:
        raise UsageError(f"--clock must be one of {', '.join(CLOCKS)}, got {name!r}")
    if device.type == "cuda":
        return "cuda", time.perf_counter  # events or synchronised wall time; the host clock is only the fallback
    if name == "auto":
        name = "thread" if torch.get_num_threads() == 1 else "wall"
    return (name, time.thread_time) if name == "thread" else (name, time.perf_counter)


def check_options(specs, options: dict) -> None:
    from bench.matrix import check_option_overrides

    if any(key.rpartition(".")[2] == "attention" for key in options):
        raise UsageError("--opt attention=... is what --attention sets; use --attention eager,fused")
    check_option_overrides(specs, options)


def run(args: argparse.Namespace) -> int:
    import torch

    from bench.data.cache import default_cache_dir
    from bench.envinfo import environment
    from bench.outputs import check_output_dirs
    from bench.presets import get_preset
    from bench.recipe import parse_assignments
    from bench.speed.datafeed import DataSource
    from bench.speed.flops import counter_label, resolve_counter
    from bench.speed.output import file_stem, table, write_outputs
    from bench.speed.peaks import matmul_precision, peak_tflops
    from bench.speed.ratios import add_ratios
    from bench.speed.suite import INTERLEAVE, Case, Settings, run_suite
    from bench.speed.targets import check_targets
    from bench.speed.workload import default_axes, method_workload
    from methods.attention import ATTENTION_MODES

    attentions = parse_list(args.attention, "--attention", ATTENTION_MODES)
    compile_axis = [COMPILE_AXIS[v] for v in parse_list(args.compile, "--compile", tuple(COMPILE_AXIS))]
    device = resolve_device(args.device)
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    if threads < 0:
        raise UsageError(f"--threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    interleave = args.interleave or ("off" if device.type == "cuda" else "modes")
    if interleave not in INTERLEAVE:
        raise UsageError(f"--interleave must be one of {', '.join(INTERLEAVE)}, got {interleave!r}")
    clock_name, clock = step_clock(args.clock, device)
    warmup, steps = DEFAULT_STEPS["cuda" if device.type == "cuda" else "cpu"]
    warmup = warmup if args.warmup is None else args.warmup
    steps = steps if args.steps is None else args.steps
    if warmup < 1 or steps < 1:
        raise UsageError(f"--warmup and --steps must be >= 1 (the first step is always a warm-up), got {warmup}, {steps}")
    if args.num_classes < 2:
        raise UsageError(f"--num-classes must be >= 2, got {args.num_classes}")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        raise UsageError(f"--peak-tflops must be > 0, got {args.peak_tflops}")
    if args.resize_size is not None and not args.with_data:
        raise UsageError("--resize-size only matters with --with-data (synthetic inputs are not resized)")
    specs = method_specs(args.methods)
    options = parse_assignments(args.opt, "--opt")
    check_options(specs, options)
    preset = get_preset(args.preset)
    counter = resolve_counter(args.flop_counter)
    check_output_dirs([("--results-dir", args.results_dir),
                       ("--cache-dir", (args.cache_dir or default_cache_dir())
                        if args.with_data and not args.no_cache else None)])

    data, card, num_classes = None, None, args.num_classes
    if args.with_data:
        workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 0)
        if workers < 0:
            raise UsageError(f"--workers must be >= 0, got {workers}")
        cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
        data = DataSource.open(args.with_data, args.data_root, data_options(args), workers, cache_dir)
        card, num_classes = data.card, data.card.num_classes
    sizes, batches = default_axes(preset, with_data=data is not None)
    if args.img_size:
        sizes = parse_list(args.img_size, "--img-size", cast=int)
    if args.batch_size:
        batches = parse_list(args.batch_size, "--batch-size", cast=int)
    extra = {"resize_size": args.resize_size} if args.resize_size else None

    cases = [Case(method_workload(adapter, variant, attention, preset, card, size, batch, num_classes, options, extra),
                  compiled)
             for size in sizes for batch in batches for adapter, variant in specs
             for compiled in compile_axis for attention in attentions]
    peak, peak_source = peak_tflops(device, args.precision, args.peak_tflops)
    settings = Settings(device, args.precision, warmup, steps, counter, peak, args.compile_backend, args.compile_mode,
                        clock=clock, interleave=interleave)
    env = environment(device)
    print(f"fgbench speed: {len(cases)} cases on {device_label(env, device)}, precision {args.precision}, "
          f"{warmup} warm-up + {steps} timed steps per phase, {clock_name} clock, interleave {interleave}; "
          f"MACs by {counter_label(counter)}; peak: "
          f"{peak if peak else '-'} TFLOP/s ({peak_source})", flush=True)

    rows = add_ratios(run_suite(cases, settings, data))
    versions = env["versions"]
    for row in rows:
        row.update(preset=preset.name, precision=args.precision, flop_counter=counter_label(counter),
                   peak_tflops=peak, peak_source=peak_source, matmul_precision=matmul_precision(args.precision),
                   device=device.type, device_name=env["device_name"], threads=torch.get_num_threads(),
                   clock=clock_name, interleave=interleave,
                   torch=versions["torch"],
                   cuda=env.get("cuda"), timm=versions["timm"], fgbench=env["fgbench"], git_sha=env["git_sha"])
    command = "python bench.py speed " + shlex.join(args.raw_argv)
    text = table(rows, cuda=device.type == "cuda")
    notes = check_targets(rows, preset.name, args.precision)
    label = f"{device_label(env, device)}, {preset.name} preset, precision {args.precision}"
    meta = {"command": command, "device_label": label, "environment": env,
            "settings": {"warmup": warmup, "steps": steps, "clock": clock_name, "interleave": interleave,
                         "flop_counter": counter_label(counter),
                         "peak_tflops": peak, "peak_source": peak_source, "dataset": args.with_data}}
    stem = file_stem(preset.name, args.precision, device, any(compile_axis))
    paths = write_outputs(rows, args.results_dir, stem, meta, text, notes)
    print("wrote " + ", ".join(str(p) for p in paths))
    for note in notes:
        print(note)
    print(text)
    return 1 if any(row.get("error") for row in rows) else 0
