"""What the training command lines share."""

import argparse
import sys

from mmkeras import errors


def experiment_parser(description,
                      fresh_help="delete the model directory's previous contents first"):
    """An `ArgumentParser` with the options every training script takes: `--config`,
    `--model-dir`, `--set KEY=VALUE` (repeatable), `--fresh`, `--debug` and `--verbose`
    (`mmkeras.errors`); add the script's own."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiment YAML")
    parser.add_argument("--model-dir", required=True, help="output directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. trainer.epochs=3 (repeatable)")
    parser.add_argument("--fresh", action="store_true", help=fresh_help)
    return errors.add_flags(parser)


def load_config_or_none(loader, path, overrides):
    """Runs a config loader for a command line.

    Returns the config, or None after printing the `ConfigError` (which names the bad key) to
    stderr; the caller then exits with status 2.
    """
    from mmkeras.configs import ConfigError

    try:
        return loader(path, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def run_experiment(args, loader, train, summarize):
    """A script's `main` after parsing: loads the config with `loader` (exit status 2 after a
    `ConfigError`), runs `train(config)`, prints the lines of `summarize(report)`; returns the
    exit status."""
    config = load_config_or_none(loader, args.config, args.set)
    if config is None:
        return 2
    report = train(config)
    for line in summarize(report):
        print(line)
    return 0
