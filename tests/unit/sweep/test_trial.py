"""What a sweep hands each trial's driver: the tokenizer, loaded once (``grpo_ray.run.trainer.load_tokenizer``).

Unpickled in a fresh process, as Tune does in a trial's worker, it must render a prompt exactly as the one
loaded by ``AutoTokenizer`` does (the token counts the driver filters prompts by, tools included), without
importing transformers' model auto classes, which cost each driver about 230 MiB and 3 s. (A multi-turn
run's driver still imports them, through vLLM's tool parsers, which it builds to check the parser's name.)
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_ray.config import load_config
from grpo_ray.rollout.kinds.base import kind_spec, prompt_encoder
from grpo_ray.run.trainer import load_tokenizer

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
MESSAGES = [{"role": "system", "content": "Answer in the format."}, {"role": "user", "content": "What is 17 * 23?"}]

IN_A_TRIAL = """
import json, pickle, sys
from grpo_ray.config import load_config
from grpo_ray.rollout.kinds.base import kind_spec, prompt_encoder
tokenizer = pickle.loads(open(sys.argv[1], "rb").read())
cfg = load_config(sys.argv[2], [])
ids = prompt_encoder(kind_spec(cfg), tokenizer)(json.loads(sys.argv[3]))
print(json.dumps({"ids": list(ids), "class": type(tokenizer).__name__,
                  "auto_classes": "transformers.models.auto.auto_factory" in sys.modules}))
"""


def test_the_sweeps_tokenizer_renders_a_trials_prompts_as_autotokenizer_does(tmp_path) -> None:
    config = REPO / "examples" / "tiny_cpu.yaml"
    cfg = load_config(config, [])
    tokenizer = load_tokenizer(cfg)
    expected = list(prompt_encoder(kind_spec(cfg), tokenizer)(MESSAGES))
    (tmp_path / "tokenizer.pkl").write_bytes(pickle.dumps(tokenizer))
    done = subprocess.run([sys.executable, "-c", IN_A_TRIAL, str(tmp_path / "tokenizer.pkl"), str(config),
                           json.dumps(MESSAGES)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["ids"] == expected and got["class"] == type(tokenizer).__name__
    assert not got["auto_classes"]
