"""The ``gonka-ray`` command line (click)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from gonka_ray import constants as C
from gonka_ray.exceptions import GonkaError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """gonka_ray: decentralized, verifiable LLM inference on Ray."""


@main.group()
def keys() -> None:
    """Manage Ed25519 participant and client keys."""


@keys.command("new")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keys_new(path: Path) -> None:
    """Create a new key file at PATH (mode 0600; never overwrites)."""
    from gonka_ray.crypto import KeyPair

    key = KeyPair.generate()
    try:
        key.save(path)
    except GonkaError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{key.address}  {path}")


@main.command()
@click.option("--model", default=C.DEFAULT_MODEL, show_default=True, help="model id")
@click.option("--cheat", default="int4", show_default=True, help="p3's cheat (an adversary kind)")
@click.option(
    "--engine", default="transformers", type=click.Choice(["transformers", "vllm", "fake"])
)
@click.option("--requests", default=24, show_default=True, type=click.IntRange(2, 10_000))
@click.option("--max-tokens", default=24, show_default=True, type=click.IntRange(1, 4096))
def demo(model: str, cheat: str, engine: str, requests: int, max_tokens: int) -> None:
    """Four participants on loopback Ray, one cheating: serve, verify, vote, refund, kick out."""
    import asyncio

    from gonka_ray.demo import demo_network_config, run_demo
    from gonka_ray.network import init_local_ray

    try:
        config = demo_network_config(model, cheat, engine)
    except GonkaError as exc:
        raise click.ClickException(exc.message) from None
    init_local_ray()
    report = asyncio.run(run_demo(config, requests=requests, max_tokens=max_tokens))
    caught = report.summary["cheaters_caught"] == report.summary["cheaters"]
    click.echo("the cheater was caught and kicked out" if caught else "WARNING: cheater not caught")


@main.command()
@click.option("--model", default=C.DEFAULT_MODEL, show_default=True, help="model id")
@click.option("--prompt", default="What is the capital of France? Answer in one sentence.")
@click.option("--max-tokens", default=48, show_default=True, type=click.IntRange(1, 4096))
def chat(model: str, prompt: str, max_tokens: int) -> None:
    """Load the embedded model locally (no network) and answer one chat prompt."""
    import torch

    from gonka_ray.engine.models import load_hf

    t0 = time.perf_counter()
    try:
        hf_model, tok = load_hf(model)
    except GonkaError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"loaded {model} in {time.perf_counter() - t0:.1f} s")
    ids = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
    )["input_ids"]
    t0 = time.perf_counter()
    with torch.no_grad():
        out = hf_model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    click.echo(f"user> {prompt}\nassistant> {answer.strip()}")
    click.echo(f"({out.shape[1] - ids.shape[1]} tokens in {time.perf_counter() - t0:.1f} s)")


def run() -> None:  # pragma: no cover - console entry
    try:
        main()
    except GonkaError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
