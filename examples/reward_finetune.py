"""Fine-tune a small fusion network with FuScore as its reward, on VIFB's source pairs, on the CPU in minutes.

    python examples/reward_finetune.py --output-dir outputs/reward_finetune        # the full CPU example
    python examples/reward_finetune.py --help                                     # every setting

It pretrains `fuscore.fusion_net.FusionNet` on the fidelity-to-sources loss ("before"), fine-tunes copies of it with
the shipped demo scorer's FuScore as the reward, directly (the reward's gradient through the scorer) and
group-relatively (GRPO-style advantages of a stochastic policy's candidates), and prints, for held-out scenes, the
FuScore of the outputs before and after beside classical IVIF metrics; `before_after.png` shows the images.
VIFB is read from `$FUSCORE_VIFB_DIR` or `../shared/data/vifb` next to the checkout (`--vifb-dir` to choose).

The demo scorer was trained on FuScore's synthetic benchmark only: this shows the machinery, not better fusion for
people. The logic is `fuscore.reward_finetune` (`run_reward_finetune`, `FinetuneSettings`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuscore.reward_finetune import main  # noqa: E402


if __name__ == "__main__":
    sys.exit(main())
