"""`python -m renderer` is the `svdrender` command (also what `accelerate launch -m renderer` runs)."""

from .cli import main

main(prog_name="svdrender")
