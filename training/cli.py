"""What the training command lines share."""

import argparse

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


def run_experiment(args, loader, train, summarize):
    """A script's `main` after parsing: loads the config with `loader`, runs `train(config)`,
    prints the lines of `summarize(report)`; returns the exit status. The `main` is wrapped by
    `mmkeras.errors.command_line`: a `ConfigError` becomes one line and exit status 2."""
    config = loader(args.config, args.set)
    report = train(config)
    for line in summarize(report):
        print(line)
    return 0
