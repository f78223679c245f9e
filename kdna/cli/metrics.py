"""``kdna metrics``: parameters, MACs, latency and throughput, with the reference flags.

The reference code's flags mean what they mean there: ``--params`` (size and MACs), ``--latency``
(timing), ``--gpu``, ``--iter``, ``-b/--batch-size``, ``--arch``, ``--customize`` (the
KernelDNA layout of ``--arch``) and ``--num-threads``. Unlike the reference it runs without a
GPU, and every number comes with the device that produced it. Beyond the reference:

* ``--compare``: the static network, the KernelDNA converted network, the paper layout and
  the other dynamic convolutions (CondConv, DY-Conv, ODConv), measured in one run, as a
  table of throughput ratios to the static network (:mod:`kdna.bench.variants`);
* ``--train`` (time one training step), ``--eager`` (skip the deployment folding),
  ``--channels-last``, ``--dtype``, ``--compile``, ``--warmup``, ``--image-size``, ``--csv``.
"""

from __future__ import annotations

import argparse
import json

import torch

from kdna.bench.harness import Options, compare, count_macs
from kdna.bench.variants import VARIANTS, comparison_models, speed_table, write_csv
from kdna.nn.utils import count_parameters, device_description

__all__ = ["configure", "run"]


def configure(p: argparse.ArgumentParser, add) -> None:
    """Add the metrics options to ``p``; ``add`` registers both spellings of a flag."""
    add(p, "-a", "--arch", default="resnet18",
        help="resnet18, resnet50, mobilenet_v2 or mobilenet_v2_1d2")
    add(p, "--customize", action="store_true", help="the KernelDNA (paper) layout of --arch")
    add(p, "--params", action="store_true", help="print parameters and MACs")
    add(p, "--latency", action="store_true", help="measure latency and throughput")
    add(p, "--gpu", action="store_true", help="run on the GPU (cuda)")
    add(p, "--iter", type=int, default=30, help="timed iterations")
    add(p, "--warmup", type=int, default=10, help="untimed iterations first (reference: 50)")
    add(p, "-b", "--batch-size", type=int, default=1)
    add(p, "--image-size", type=int, default=224)
    add(p, "--num-threads", type=int, default=None, help="CPU threads for torch")
    add(p, "--compare", action="store_true",
        help="measure static, kdna, paper and the baselines together, with ratios")
    add(p, "--variants", nargs="+", default=None, choices=VARIANTS,
        help="which networks --compare measures (default: all)")
    add(p, "--train", action="store_true", help="time one training step instead of inference")
    add(p, "--eager", action="store_true",
        help="inference without folding BatchNorms and modulation first")
    add(p, "--channels-last", action="store_true")
    add(p, "--dtype", default="float32", choices=["float32", "bf16", "fp16"],
        help="autocast dtype")
    add(p, "--compile", action="store_true", help="torch.compile every model")
    add(p, "--csv", default=None, help="also write the results to this CSV file")


def run(args: argparse.Namespace) -> str:
    """Run the metrics the flags ask for; return the printed report."""
    # the flags were checked by kdna.cli.validate.check_metrics_args
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    if args.compare:
        variants = args.variants or VARIANTS
    else:
        variants = ["paper" if args.customize else "static"]
    models = comparison_models(args.arch, variants, image_size=args.image_size)
    if args.params and not args.latency:  # sizes only, as the reference's --params
        example = torch.zeros(1, 3, args.image_size, args.image_size)
        rows = {name: {"params": count_parameters(m), "macs": count_macs(m.eval(), example)}
                for name, m in models.items()}
        return json.dumps({"arch": args.arch, "image_size": args.image_size, **rows}, indent=2)
    options = Options(device="cuda" if args.gpu else "cpu",
                      mode="train" if args.train else "inference",
                      channels_last=args.channels_last, dtype=args.dtype, compile=args.compile,
                      deploy=not args.eager, warmup=args.warmup, iters=args.iter)
    results = compare(models, shape, options=options, progress=True)
    if args.csv:
        write_csv(args.csv, results, baseline=results[0].name)
    kind = "training step" if args.train else ("inference, eager" if args.eager
                                                else "inference, deployed")
    header = (f"{args.arch}, batch {args.batch_size}, {args.image_size}x{args.image_size}, "
              f"{kind}, {args.dtype}{', channels-last' if args.channels_last else ''}"
              f"{', compiled' if args.compile else ''} on "
              f"{device_description(options.device)}")
    return header + "\n\n" + speed_table(results, baseline=results[0].name)
