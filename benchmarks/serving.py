"""Serving benchmark of one model directory: every runtime, its size, speed and accuracy.

    python -m benchmarks.serving --model-dir DIR [--iterations 200] [--batch-size 64]
        [--clients 4] [--requests 50] [--threads 2]

1. Exports DIR with `serving.export` in every format (SavedModel, TFLite float32 / float16 /
   dynamic range / int8, ONNX) unless `DIR/export/parity.json` already lists them all.
2. For the Keras model (`model(x)`), the SavedModel `serving_default` signature, each TFLite
   variant (LiteRT signature runner) and ONNX (onnxruntime): latency of single-example calls
   (p50 / p99 over `--iterations` calls, after warm-up), throughput in examples/s with batches
   of `--batch-size` over the whole test split, and the test accuracy of that pass.
3. Starts the local TF-Serving-compatible server (`python -m serving.server`) on the exported
   SavedModel and sends `--requests` single-example REST `serving_default` requests from each of
   `--clients` concurrent clients: p50 / p99 latency, requests/s, errors.

    python -m benchmarks.serving --model-dir DIR --concurrency [--requests 40]
        [--concurrency-clients 1 8 32] [--setups old new stdlib_batching aiohttp]

runs only the server, in one run: for each setup (`old`: the standard library's
ThreadingHTTPServer without batching, the previous server; `new`: aiohttp with batching, the
default; `stdlib_batching` and `aiohttp` separate the two changes) a fresh server process gets
1, 8 and 32 concurrent clients, each on a keep-alive connection sending `--requests`
pre-encoded single-example `serving_default` requests back to back. It prints requests/s,
p50/p99 latency, requests per model call (from `GET /monitoring/batching`) and errors, the
issue's goal (>= 5x the old requests/s at 8 clients with p99 <= 100 ms), and writes
`DIR/export/benchmark_serving_concurrency.json`. Only the SavedModel is needed (exported when
missing).

Prints Markdown tables and writes `DIR/export/benchmark_serving.json`, including the issue's
goal: int8 TFLite at most 0.3x the float32 TFLite size with top-1 accuracy within 0.5 point of
Keras. Timings share the machine with whatever else runs; the JSON records the settings.
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import pathlib
import platform
import subprocess
import sys
import threading
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
ALL_FORMATS = ("savedmodel", "tflite", "onnx")
ALL_QUANT = ("float32", "float16", "dynamic", "int8")
RUNTIMES = ("keras", "keras_compiled", "savedmodel", "tflite", "tflite_f16", "tflite_dynamic",
            "tflite_int8", "onnx")
LABELS = {
    "keras": "Keras call (eager)",
    "keras_compiled": "Keras predict_on_batch",
    "savedmodel": "SavedModel signature",
    "tflite": "TFLite float32",
    "tflite_f16": "TFLite float16",
    "tflite_dynamic": "TFLite dynamic range",
    "tflite_int8": "TFLite int8",
    "onnx": "ONNX (onnxruntime)",
}
GOAL_SIZE_RATIO = 0.3
GOAL_ACCURACY_POINTS = 0.5


def ensure_export(model_dir):
    """Runs the export in every format unless parity.json already has them; returns it."""
    from serving import export

    path = model_dir / "export" / "parity.json"
    if path.is_file():
        report = json.loads(path.read_text())
        have = all(k in report and pathlib.Path(report[k].get("path", "")).exists()
                   for k in RUNTIMES if not k.startswith("keras"))
        if have:
            return report
    print(f"[benchmark] exporting {model_dir} in every format", flush=True)
    return export.export(model_dir, ALL_FORMATS, tflite_quant=ALL_QUANT)


def test_data(config, max_examples=None):
    """The test split decoded by the training pipeline: `(inputs, labels)` as numpy."""
    from serving.export import _batches

    xs, ys = {}, []
    for x, y in _batches(config, max_examples, batch_size=256):
        for k, v in x.items():
            xs.setdefault(k, []).append(v)
        ys.append(y)
    return {k: np.concatenate(v) for k, v in xs.items()}, np.concatenate(ys)


def runners(model, report, threads):
    """`{runtime: (single_example_fn, batch_fn)}`; each fn maps inputs to probabilities."""
    import tensorflow as tf

    from serving import onnx_export
    from serving.export import tflite_runner

    result = {
        "keras": (lambda x: np.asarray(model(x, training=False)),) * 2,
        "keras_compiled": (lambda x: np.asarray(model.predict_on_batch(x)),) * 2,
    }
    signature = tf.saved_model.load(report["savedmodel"]["path"]).signatures["serving_default"]

    def savedmodel(x):
        return signature(**{k: tf.constant(v) for k, v in x.items()})["probabilities"].numpy()

    result["savedmodel"] = (savedmodel, savedmodel)
    for key in RUNTIMES:
        if key.startswith("tflite"):
            # One interpreter per input shape: a shape change reallocates tensors.
            single = tflite_runner(report[key]["path"], num_threads=threads)
            batch = tflite_runner(report[key]["path"], num_threads=threads)
            result[key] = (lambda x, r=single: r(x)["probabilities"],
                           lambda x, r=batch: r(x)["probabilities"])
    _, run = onnx_export.session(report["onnx"]["path"], threads=threads)
    result["onnx"] = (lambda x: run(x)["probabilities"],) * 2
    return result


def _percentiles(seconds):
    ms = np.asarray(seconds) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def time_runtime(single, batch, inputs, labels, iterations, batch_size, warmup=10):
    """Single-example latency, batch throughput and accuracy of one runtime."""
    n = len(labels)
    one = [{k: v[i:i + 1] for k, v in inputs.items()} for i in range(min(n, 64))]
    for i in range(warmup):
        single(one[i % len(one)])
    latencies = []
    for i in range(iterations):
        x = one[i % len(one)]
        start = time.perf_counter()
        single(x)
        latencies.append(time.perf_counter() - start)
    batch({k: v[:batch_size] for k, v in inputs.items()})  # warm-up at the batch shape
    predictions = []
    start = time.perf_counter()
    for lo in range(0, n, batch_size):
        predictions.append(np.asarray(batch({k: v[lo:lo + batch_size] for k, v in inputs.items()})))
    elapsed = time.perf_counter() - start
    p50, p99 = _percentiles(latencies)
    accuracy = float((np.concatenate(predictions).argmax(-1) == labels).mean())
    return {"latency_ms_p50": p50, "latency_ms_p99": p99,
            "throughput_examples_per_s": n / elapsed, "accuracy": accuracy, "examples": n}


def start_server(base_path, log_dir, timeout=120.0, extra_args=()):
    """Starts `python -m serving.server` on `base_path`; returns (process, rest_port)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out_path, err_path = log_dir / "server.stdout", log_dir / "server.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving.server", "--model-base-path", str(base_path),
             "--rest-port", "0", "--grpc-port", "0", "--poll-seconds", "0", *extra_args],
            cwd=REPO, env=env, stdout=out, stderr=err,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in out_path.read_text().splitlines():
            if line.startswith("READY "):
                fields = dict(item.split("=") for item in line.split()[1:])
                return process, int(fields["rest"])
        if process.poll() is not None:
            break
        time.sleep(0.2)
    stop_server(process)
    raise RuntimeError(f"the server did not start:\n{err_path.read_text()[-3000:]}")


def stop_server(process):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def load_server(rest_port, model_name, inputs, clients, requests):
    """`clients` threads each sending `requests` single-example REST predicts."""
    from serving.client import RestClient

    n = len(next(iter(inputs.values())))
    latencies, errors, lock = [], [], threading.Lock()
    RestClient("localhost", rest_port, model_name).predict(
        {k: v[:1] for k, v in inputs.items()})  # warm-up (and metadata cache)

    def work(client_id):
        client = RestClient("localhost", rest_port, model_name, timeout=60.0)
        for i in range(requests):
            row = (client_id * requests + i) % n
            x = {k: v[row:row + 1] for k, v in inputs.items()}
            start = time.perf_counter()
            try:
                client.predict(x)
                ok = True
            except Exception as e:  # counted, the run goes on
                ok = False
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:200])
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(work, range(clients)))
    elapsed = time.perf_counter() - start
    p50, p99 = _percentiles(latencies) if latencies else (float("nan"), float("nan"))
    return {"clients": clients, "requests": clients * requests, "latency_ms_p50": p50,
            "latency_ms_p99": p99, "requests_per_s": clients * requests / elapsed,
            "errors": len(errors), "first_errors": errors[:3]}


# Concurrency mode: the server under 1, 8 and 32 concurrent REST clients, old path vs new.

SERVER_SETUPS = {
    "old": ("stdlib HTTP, no batching (previous server)",
            ["--http-stack", "stdlib", "--no-enable-batching"]),
    "stdlib_batching": ("stdlib HTTP + batching", ["--http-stack", "stdlib"]),
    "aiohttp": ("aiohttp, no batching", ["--http-stack", "aiohttp", "--no-enable-batching"]),
    "new": ("aiohttp + batching (default)", ["--http-stack", "aiohttp"]),
    "new_wait_2ms": ("aiohttp + batching, 2 ms timeout",
                     ["--http-stack", "aiohttp", "--batch-timeout-micros", "2000"]),
}
GOAL_SPEEDUP_AT_8 = 5.0
GOAL_P99_MS_AT_8 = 100.0


def request_bodies(inputs, count=64):
    """Pre-encoded single-example `serving_default` REST bodies (columnar JSON), so that the
    load generator spends its time waiting for the server, not encoding JSON."""
    n = len(next(iter(inputs.values())))
    return [json.dumps({"inputs": {k: v[i:i + 1].tolist() for k, v in inputs.items()}}).encode()
            for i in range(min(n, count))]


def _get_json(port, path):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def concurrent_load(port, model_name, bodies, clients, requests, warmup=2):
    """`clients` threads, each on its own keep-alive connection, sending `requests` batch-1
    predicts back to back; returns requests/s, p50/p99 latency and the batcher's counters."""
    path = f"/v1/models/{model_name}:predict"
    headers = {"Content-Type": "application/json"}
    latencies, errors, lock = [], [], threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def work(client_id):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []

        def send(i):
            connection.request("POST", path, bodies[(client_id * 7 + i) % len(bodies)], headers)
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")

        try:
            for i in range(warmup):
                send(i)
        except Exception as e:  # counted below; the barrier must still be reached
            with lock:
                errors.append(f"warm-up: {e}"[:200])
        barrier.wait()
        for i in range(requests):
            start = time.perf_counter()
            try:
                send(i)
                mine.append(time.perf_counter() - start)
            except Exception as e:  # counted, the run goes on
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    before = _get_json(port, "/monitoring/batching")
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    after = _get_json(port, "/monitoring/batching")
    p50, p99 = _percentiles(latencies) if latencies else (float("nan"), float("nan"))
    result = {"clients": clients, "requests": clients * requests, "seconds": elapsed,
              "requests_per_s": len(latencies) / elapsed, "latency_ms_p50": p50,
              "latency_ms_p99": p99, "errors": len(errors), "first_errors": errors[:3]}
    if after.get("enabled"):
        batches = after["batches"] - before["batches"]
        result["merged_calls"] = batches
        result["requests_per_call"] = (after["requests"] - before["requests"]) / max(batches, 1)
    return result


def run_concurrency(base_path, model_name, inputs, log_dir, client_counts, requests, setups):
    """Every server setup under every client count, one server process per setup."""
    bodies = request_bodies(inputs)
    rows = []
    for key in setups:
        label, args = SERVER_SETUPS[key]
        setup_dir = log_dir / key
        setup_dir.mkdir(parents=True, exist_ok=True)
        process, port = start_server(base_path, setup_dir, extra_args=args)
        try:
            for clients in client_counts:
                row = concurrent_load(port, model_name, bodies, clients, requests)
                row.update(setup=key, label=label, server_args=args)
                rows.append(row)
                print(f"[benchmark] {label}: {clients} clients: {row['requests_per_s']:.1f} "
                      f"requests/s, p50 {row['latency_ms_p50']:.1f} ms, p99 "
                      f"{row['latency_ms_p99']:.1f} ms, {row['errors']} errors", flush=True)
        finally:
            stop_server(process)
    return rows


def concurrency_markdown(rows):
    lines = [
        "| server | clients | requests | requests/s | p50 ms | p99 ms | requests per call "
        "| errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per_call = f"{r['requests_per_call']:.1f}" if "requests_per_call" in r else "1"
        lines.append(
            f"| {r['label']} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.1f} | "
            f"{r['latency_ms_p50']:.1f} | {r['latency_ms_p99']:.1f} | {per_call} | "
            f"{r['errors']} |"
        )
    return "\n".join(lines)


def concurrency_goal(rows):
    """The issue's target: >= 5x the old requests/s at 8 clients with p99 <= 100 ms."""
    at8 = {r["setup"]: r for r in rows if r["clients"] == 8}
    if "old" not in at8 or "new" not in at8:
        return None
    speedup = at8["new"]["requests_per_s"] / max(at8["old"]["requests_per_s"], 1e-9)
    p99 = at8["new"]["latency_ms_p99"]
    return {"speedup_at_8_clients": speedup, "p99_ms_at_8_clients": p99,
            "min_speedup": GOAL_SPEEDUP_AT_8, "max_p99_ms": GOAL_P99_MS_AT_8,
            "met": bool(speedup >= GOAL_SPEEDUP_AT_8 and p99 <= GOAL_P99_MS_AT_8)}


def savedmodel_base(model_dir):
    """`DIR/export/savedmodel`, exporting the SavedModel first when no version exists."""
    from serving import export

    base = model_dir / "export" / "savedmodel"
    if not list(base.glob("*/[0-9]*/saved_model.pb")):
        print(f"[benchmark] exporting {model_dir} (SavedModel)", flush=True)
        export.export(model_dir, ["savedmodel"])
    return base


def main_concurrency(args):
    from serving.export import load_model_dir
    from training.report import write_json

    model_dir = pathlib.Path(args.model_dir)
    base = savedmodel_base(model_dir)
    config, _ = load_model_dir(model_dir)
    inputs, _ = test_data(config, 64)
    log_dir = model_dir / "export" / "benchmark_logs"
    rows = run_concurrency(base, config.model.name, inputs, log_dir, args.concurrency_clients,
                           args.requests, args.setups)
    table = concurrency_markdown(rows)
    goal = concurrency_goal(rows)
    out = {"model_dir": str(model_dir), "rows": rows, "goal": goal, "table": table,
           "settings": {"clients": args.concurrency_clients, "requests_per_client": args.requests,
                        "setups": args.setups, "cpus": os.cpu_count(),
                        "platform": platform.platform()}}
    write_json(model_dir / "export" / "benchmark_serving_concurrency.json", out)
    print("\n" + table + "\n")
    if goal:
        print(f"Goal (>= {GOAL_SPEEDUP_AT_8:g}x the old requests/s at 8 clients, p99 <= "
              f"{GOAL_P99_MS_AT_8:g} ms): {goal['speedup_at_8_clients']:.1f}x, p99 "
              f"{goal['p99_ms_at_8_clients']:.1f} ms -> {'met' if goal['met'] else 'NOT met'}")
    print(f"[benchmark] wrote {model_dir / 'export' / 'benchmark_serving_concurrency.json'}")
    return 0


def markdown(results, report, server):
    float_size = report["tflite"]["bytes"]
    lines = [
        "| runtime | artifact bytes | size vs TFLite f32 | test accuracy | top-1 agreement "
        "| p50 ms (batch 1) | p99 ms (batch 1) | examples/s (batch) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in RUNTIMES:
        r = results[key]
        size = r["bytes"] if key.startswith("keras") else report[key]["bytes"]
        ratio = f"{size / float_size:.3f}" if size and key.startswith("tflite") else "-"
        agreement = report.get(key, {}).get("top1_agreement")
        lines.append(
            f"| {LABELS[key]} | {size:,} | {ratio} | {r['accuracy']:.4f} | "
            f"{'-' if agreement is None else f'{agreement:.4f}'} | {r['latency_ms_p50']:.2f} | "
            f"{r['latency_ms_p99']:.2f} | {r['throughput_examples_per_s']:.0f} |"
        )
    if server:
        lines += [
            "",
            "| local server (REST, batch 1) | requests | p50 ms | p99 ms | requests/s | errors |",
            "|---|---:|---:|---:|---:|---:|",
            f"| {server['clients']} concurrent clients | {server['requests']} | "
            f"{server['latency_ms_p50']:.1f} | {server['latency_ms_p99']:.1f} | "
            f"{server['requests_per_s']:.1f} | {server['errors']} |",
        ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--iterations", type=int, default=200, help="single-example calls per runtime")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--clients", type=int, default=4, help="concurrent REST clients")
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--threads", type=int, default=2, help="TFLite / onnxruntime threads")
    parser.add_argument("--max-examples", type=int, default=None, help="test examples (default: all)")
    parser.add_argument("--no-server", action="store_true", help="skip the server benchmark")
    parser.add_argument("--concurrency", action="store_true",
                        help="only the server under 1/8/32 concurrent REST clients, old vs new")
    parser.add_argument("--concurrency-clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--setups", nargs="+", choices=sorted(SERVER_SETUPS),
                        default=["old", "new"], help="server setups compared by --concurrency")
    args = parser.parse_args(argv)
    if args.concurrency:
        return main_concurrency(args)

    from serving.export import load_model_dir
    from training.report import write_json

    model_dir = pathlib.Path(args.model_dir)
    report = ensure_export(model_dir)
    config, model = load_model_dir(model_dir)
    inputs, labels = test_data(config, args.max_examples)
    print(f"[benchmark] {len(labels)} test examples; {args.iterations} single calls per runtime; "
          f"batches of {args.batch_size}; {args.threads} threads for TFLite/ONNX", flush=True)

    results = {}
    for key, (single, batch) in runners(model, report, args.threads).items():
        results[key] = time_runtime(single, batch, inputs, labels, args.iterations, args.batch_size)
        print(f"[benchmark] {LABELS[key]}: p50 {results[key]['latency_ms_p50']:.2f} ms, "
              f"{results[key]['throughput_examples_per_s']:.0f} examples/s, accuracy "
              f"{results[key]['accuracy']:.4f}", flush=True)
    for key in ("keras", "keras_compiled"):
        results[key]["bytes"] = (model_dir / "model.keras").stat().st_size

    server = None
    if not args.no_server:
        log_dir = model_dir / "export" / "benchmark_logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        process, rest_port = start_server(model_dir / "export" / "savedmodel", log_dir)
        try:
            server = load_server(rest_port, report["model_name"], inputs, args.clients, args.requests)
        finally:
            stop_server(process)

    int8_ratio = report["tflite_int8"]["bytes"] / report["tflite"]["bytes"]
    int8_points = 100 * (results["keras"]["accuracy"] - results["tflite_int8"]["accuracy"])
    goal = {
        "int8_size_vs_float32": int8_ratio,
        "int8_accuracy_drop_points": int8_points,
        "max_size_ratio": GOAL_SIZE_RATIO,
        "max_accuracy_drop_points": GOAL_ACCURACY_POINTS,
        "met": bool(int8_ratio <= GOAL_SIZE_RATIO and int8_points <= GOAL_ACCURACY_POINTS),
    }
    table = markdown(results, report, server)
    out = {
        "model_dir": str(model_dir), "model_name": report["model_name"],
        "runtimes": results, "server": server, "goal": goal,
        "settings": {"iterations": args.iterations, "batch_size": args.batch_size,
                     "clients": args.clients, "requests_per_client": args.requests,
                     "threads": args.threads, "examples": int(len(labels)),
                     "cpus": os.cpu_count(), "platform": platform.platform()},
        "table": table,
    }
    write_json(model_dir / "export" / "benchmark_serving.json", out)
    print("\n" + table + "\n")
    print(f"Goal (int8 <= {GOAL_SIZE_RATIO}x float size, accuracy within {GOAL_ACCURACY_POINTS} "
          f"point): size {int8_ratio:.3f}x, accuracy int8 - Keras {0.0 - int8_points:+.2f} points -> "
          f"{'met' if goal['met'] else 'NOT met'}")
    print(f"[benchmark] wrote {model_dir / 'export' / 'benchmark_serving.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
