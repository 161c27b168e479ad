"""Runs `training.trainer.train` in a fresh process for the distributed tests.

    python -m tests.training.train_driver runs SPEC.json
        SPEC: [{"config": PATH, "overrides": [...], "model_dir": DIR}, ...], all trained in this
        process (so they share its devices: the first run's `runtime.cpu_replicas` applies).
        Prints one `RESULT {json}` line per run: the report's key figures plus what the saved
        model says about dtypes and its optimizer.

    python -m tests.training.train_driver weights CONFIG MODEL_DIR OUT.npz OVERRIDES_JSON
        Trains once and saves this process's final model weights (every worker's, not only the
        chief's) to OUT.npz. `TF_CONFIG` in the environment makes it a cluster worker.
"""

import json
import sys

import numpy as np


def _final_dtypes(model):
    """Compute dtypes of the softmax layers and of the model's output."""
    softmax = {
        layer.name: layer.compute_dtype
        for layer in _all_layers(model)
        if getattr(layer, "activation", None) is not None
        and getattr(layer.activation, "__name__", "") == "softmax"
    }
    return softmax


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def runs(spec_path):
    import keras

    from mmkeras.configs import load_config
    from training.trainer import train

    with open(spec_path) as f:
        spec = json.load(f)
    for item in spec:
        config = load_config(item["config"], item["overrides"])
        report = train(config, item["model_dir"], fresh=True)
        policy = keras.mixed_precision.global_policy().name
        keras.mixed_precision.set_global_policy("float32")
        model = keras.saving.load_model(f"{item['model_dir']}/model.keras")
        batch = {}
        for inp in model.inputs:
            shape = [2] + [d for d in inp.shape[1:]]
            batch[inp.name] = np.ones(shape, "float32")
        out = model(batch, training=False)
        optimizer = getattr(model, "optimizer", None)
        lr = None
        if optimizer is not None:
            inner = getattr(optimizer, "inner_optimizer", optimizer)
            schedule = inner._learning_rate
            if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
                # The schedule's peak (after the warm-up), not its value at the last step.
                config = schedule.get_config()
                lr = float(config.get("warmup_target") or config["initial_learning_rate"])
            else:
                lr = float(np.asarray(inner.learning_rate))
        result = {
            "model_dir": item["model_dir"],
            "policy_during_training": policy,
            "replicas": report["replicas"],
            "strategy": report["strategy"],
            "epochs": report["epochs"],
            "test_accuracy": report["test"]["accuracy"],
            "test_loss": report["test"]["loss"],
            "per_replica_batch_size": report["per_replica_batch_size"],
            "output_dtype": str(out.dtype),
            "output_sums": np.asarray(out).sum(axis=-1).tolist(),
            "softmax_dtypes": _final_dtypes(model),
            "saved_layer_policies": sorted({l.dtype_policy.name for l in _all_layers(model)}),
            "optimizer_learning_rate": lr,
        }
        print("RESULT " + json.dumps(result), flush=True)


def weights(config_path, model_dir, out_path, overrides_json):
    from mmkeras.configs import load_config
    from training import trainer

    config = load_config(config_path, json.loads(overrides_json))
    original_finish = trainer.finish

    def finish(config, model_dir, strategy, data, run, task=None):
        np.savez(out_path, *[np.asarray(w) for w in run.model.get_weights()])
        return original_finish(config, model_dir, strategy, data, run, task=task)

    trainer.finish = finish
    trainer.train(config, model_dir)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"runs": runs, "weights": weights}[command](*args)
