"""How sharply a behavior VAE (SPOT's support estimate, A2PR's generator) separates dataset actions from others.

Trains SPOT's phase-1 VAE on a built dataset and, every --every updates, prints its negative ELBO (SPOT's
estimate of -log pi_beta(a|s), averaged over --latents latent samples) on held-in dataset states with
  data:        the dataset's own actions
  +N(0, s^2):  the dataset action plus Gaussian noise of std s, clipped to the action box
  uniform:     actions drawn uniformly from the box
SPOT's actor pays lambda times this number, against a Q term normalized to about 1, so the gaps between the
columns say how hard the penalty holds the policy inside the data at a given VAE budget.

    python scripts/vae_support.py --dataset ctrlbench/walker2d/medium-v0 --steps 30000 --every 5000
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

from algorithms.core.contract import AlgoContext
from algorithms.core.registry import get_algorithm
from algorithms.core.vae import ConditionalVAE
from algorithms.spot import BETA_KL
from tasks.datasets import load_transitions

NOISE_STDS = (0.05, 0.1, 0.2, 0.5)


@torch.no_grad()
def support_table(vae: ConditionalVAE, obs: torch.Tensor, act: torch.Tensor, latents: int, seed: int
                  ) -> dict[str, float]:
    """Mean negative ELBO per action kind (each averaged over `latents` draws of z)."""
    gen = torch.Generator(device=obs.device).manual_seed(seed)
    kinds = {"data": act}
    for std in NOISE_STDS:
        noise = torch.randn(act.shape, generator=gen, device=act.device) * std * vae.max_action
        kinds[f"+N(0,{std}^2)"] = (act + noise).clamp(-vae.max_action, vae.max_action)
    kinds["uniform"] = (torch.rand(act.shape, generator=gen, device=act.device) * 2 - 1) * vae.max_action
    was_training = vae.training
    vae.eval()
    table = {k: float(torch.stack([vae.elbo_loss(obs, a, BETA_KL) for _ in range(latents)]).mean())
             for k, a in kinds.items()}
    vae.train(was_training)
    return table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="a built Minari dataset id, e.g. ctrlbench/walker2d/medium-v0")
    p.add_argument("--steps", type=int, default=30_000, help="VAE updates (SPOT's default: 100000)")
    p.add_argument("--every", type=int, default=5_000)
    p.add_argument("--probe", type=int, default=4096, help="dataset states in the probe")
    p.add_argument("--latents", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = load_transitions(args.dataset).transitions
    ctx = AlgoContext(observation_space=gym.spaces.Box(-np.inf, np.inf, (data.obs_dim,), np.float32),
                      action_space=gym.spaces.Box(-1.0, 1.0, (data.act_dim,), np.float32),
                      device=torch.device("cpu"), seed=args.seed, total_updates=args.steps, dataset=data)
    cls = get_algorithm("spot")
    spot = cls(cls.Config(vae_steps=args.steps), ctx)  # phase 1 only: every update below trains the VAE
    idx = torch.randint(spot.sampler.size, (args.probe,), generator=torch.Generator().manual_seed(args.seed + 1))
    probe = spot.sampler.gather(idx)

    header = None
    for step in range(1, args.steps + 1):
        spot.update()
        if step % args.every == 0 or step == args.steps:
            table = support_table(spot.vae, probe.observations, probe.actions, args.latents, args.seed)
            if header is None:
                header = ["step", *table]
                print(" | ".join(f"{h:>12}" for h in header), flush=True)
            print(" | ".join([f"{step:>12}", *(f"{v:>12.4f}" for v in table.values())]), flush=True)


if __name__ == "__main__":
    main()
