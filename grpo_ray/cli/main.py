"""The ``grpo-ray`` command line.

    grpo-ray train --config CONFIG [key=value ...] [--resume DIR] [--dry-run]
    grpo-ray config show CONFIG [key=value ...]      print the resolved, validated config
    grpo-ray config validate CONFIG [key=value ...]  exit 0, or print what is wrong and exit 2
    grpo-ray config fields [PREFIX]                   every config key with its default and meaning
    grpo-ray eval --model M [--adapter A] [--compare-base] --dataset D   the held-out table
    grpo-ray generate --model M [--adapter A] ["question"]               answer one, or read from stdin
    grpo-ray merge --model M --adapter A --out DIR                       base + adapter as one model
    grpo-ray tune --config SWEEP [key=value ...]                         a Ray Tune sweep (tune_configs/)
    grpo-ray serve --model M [--adapter [NAME=]A ...] [--port P]          OpenAI-compatible endpoint (Ray Serve)

A user mistake (bad config, missing file) prints one line per problem and exits 2; anything else is
an internal fault and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from grpo_ray import __version__
from grpo_ray.config import ConfigError, describe_fields, load_config
from grpo_ray.errors import UserError
from grpo_ray.cli.eval import add_eval_parser, add_generate_parser, add_merge_parser
from grpo_ray.cli.serve import add_serve_parser
from grpo_ray.cli.tune import add_tune_parser

EXIT_USER_ERROR = 2


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file (see examples/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. algo.beta=0.04")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grpo-ray",
        description="GRPO fine-tuning for reasoning on Ray: vLLM rollout, reward and DeepSpeed learner actors.",
    )
    parser.add_argument("--version", action="version", version=f"grpo-ray {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="run GRPO training (or --dry-run: one rollout + reward batch)")
    train.add_argument("--config", required=True, help="YAML config file (see examples/)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. learner.lr=1e-4")
    train.add_argument("--resume", metavar="DIR", help="continue from the last complete checkpoint in DIR")
    train.add_argument(
        "--dry-run", action="store_true",
        help="generate and score one batch with the starting policy; print samples and reward means; no update",
    )
    train.set_defaults(func=_cmd_train)

    add_eval_parser(sub)
    add_generate_parser(sub)
    add_merge_parser(sub)
    add_tune_parser(sub)
    add_serve_parser(sub)

    cfg = sub.add_parser("config", help="show, validate or describe a config")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = cfg_sub.add_parser("show", help="print the resolved, validated config as YAML")
    _add_config_args(show)
    show.set_defaults(func=_cmd_config_show)
    validate = cfg_sub.add_parser("validate", help="exit 0 if the config is valid, else print the problem and exit 2")
    _add_config_args(validate)
    validate.set_defaults(func=_cmd_config_validate)
    fields = cfg_sub.add_parser("fields", help="list every config key with its default and description")
    fields.add_argument("prefix", nargs="?", default="", help="only keys starting with this, e.g. 'algo'")
    fields.set_defaults(func=_cmd_config_fields)
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from grpo_ray.cli.train import run_train

    overrides = list(args.overrides) + ([f"trainer.resume={args.resume}"] if args.resume else [])
    return run_train(load_config(args.config, overrides), dry_run=args.dry_run)


def _cmd_config_show(args: argparse.Namespace) -> int:
    print(load_config(args.config, args.overrides).to_yaml(), end="")
    return 0


def _cmd_config_validate(args: argparse.Namespace) -> int:
    load_config(args.config, args.overrides)
    print(f"{args.config}: valid")
    return 0


def _cmd_config_fields(args: argparse.Namespace) -> int:
    rows = [r for r in describe_fields() if r[0].startswith(args.prefix)]
    if not rows:
        raise ConfigError(f"no config key starts with {args.prefix!r}; try one of: model, data, rollout, reward, algo, learner, trainer")
    width = max(len(k) for k, _, _ in rows)
    for key, default, desc in rows:
        print(f"{key:<{width}}  {desc} [default: {default}]")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        for line in str(err).splitlines():
            print(f"grpo-ray: config error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except UserError as err:
        print(f"grpo-ray: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
