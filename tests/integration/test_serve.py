"""``grpo-ray serve`` as a user runs it, tested over HTTP on 127.0.0.1 with the official ``openai``
client and raw requests.

One server for the module: the built-in base model with three adapters, the shipped
``arithmetic-tuned``, ``noise`` (rank 8, random A and B, made here: only its outputs must differ) and
``prefixed`` (the shipped adapter again, as a training run's checkpoint whose config.yaml has
demonstrations and an assistant prefix, so chat requests to it are asked as in training).
The served adapter's greedy answer is checked against transformers + PEFT computing the same thing.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .serve_battery import SHORTFALLS, Mutation, battery, problem

pytestmark = pytest.mark.integration

BASE, TUNED, NOISE, PREFIXED = "arithmetic-base", "arithmetic-tuned", "noise", "prefixed"
MODELS = {BASE, TUNED, NOISE, PREFIXED}
PREFIX = "<reasoning>\n"
DEMOS = [{"question": "What is 7 + 5?", "answer": "<reasoning>\n7 + 5 = 12\n</reasoning>\n<answer>\n12\n</answer>"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def grpo_ray_exe() -> str:
    return shutil.which("grpo-ray") or str(Path(sys.executable).parent / "grpo-ray")


def make_noise_adapter(out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from grpo_ray.models.paths import resolve_model_path

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(f"builtin:{BASE}"))
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    peft.save_pretrained(str(out))
    return out


def make_run_checkpoint(out: Path) -> Path:
    """A training output dir as grpo_ray.run.checkpoints lays it out, holding the shipped adapter and a
    config.yaml whose data section has demonstrations and an assistant prefix."""
    from grpo_ray.config import DataConfig, GRPOConfig
    from grpo_ray.models.paths import resolve_adapter_path

    ckpt = out / "checkpoints" / "step-000001"
    shutil.copytree(resolve_adapter_path(f"builtin:{TUNED}"), ckpt / "adapter")
    data = DataConfig(source="arithmetic", assistant_prefix=PREFIX, demonstrations=DEMOS)
    (ckpt / "config.yaml").write_text(GRPOConfig(data=data).to_yaml())
    (ckpt / "COMPLETE").write_text("1")
    (out / "checkpoints" / "latest").write_text(ckpt.name)
    return out


@pytest.fixture(scope="module")
def run_out(tmp_path_factory):
    return make_run_checkpoint(tmp_path_factory.mktemp("run") / "out")


@pytest.fixture(scope="module")
def server(tmp_path_factory, run_out):
    tmp = tmp_path_factory.mktemp("serve")
    noise = make_noise_adapter(tmp / "noise")
    port = free_port()
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen(
        [grpo_ray_exe(), "serve", "--model", f"builtin:{BASE}", "--adapter", f"builtin:{TUNED}",
         "--adapter", f"{NOISE}={noise}", "--adapter", f"{PREFIXED}={run_out}", "--port", str(port)],
        cwd=tmp, stdout=subprocess.PIPE, stderr=log, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    printed: list[str] = []
    reader = threading.Thread(target=lambda: printed.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.time() + 300
    while not any("serving on" in line for line in printed):  # the command says when it is ready
        assert proc.poll() is None, (tmp / "serve.log").read_text()[-4000:]
        assert time.time() < deadline, "server not up in 300 s: " + (tmp / "serve.log").read_text()[-4000:]
        time.sleep(1)
    time.sleep(1)  # the lines printed with it
    yield url, proc, "".join(printed)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    try:
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    log.close()
    stderr = (tmp / "serve.log").read_text()
    assert proc.returncode == 0 and "stopped" in stderr, stderr[-3000:]


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def questions():
    from grpo_ray.config import DataConfig
    from grpo_ray.data.from_config import load_split

    return [row["prompt"] for row in load_split(DataConfig(source="arithmetic"), "test", limit=40)]


def test_the_server_printed_its_url_and_a_curl_example(server):
    url, _, printed = server
    assert f"serving on {url}/v1" in printed and f"curl {url}/v1/chat/completions" in printed and TUNED in printed
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200


def test_models_lists_the_base_and_each_adapter(client):
    ids = {m.id for m in client.models.list().data}
    assert ids == MODELS


def test_chat_answer_matches_transformers_with_the_adapter(client, questions):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_ray.models.paths import resolve_adapter_path, resolve_model_path

    messages = questions[0]
    reply = client.chat.completions.create(model=TUNED, messages=messages, max_tokens=48, temperature=0)
    choice = reply.choices[0]
    assert reply.model == TUNED and choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens > 0 and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    path = resolve_model_path(f"builtin:{BASE}")
    tok = AutoTokenizer.from_pretrained(path)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path), str(resolve_adapter_path(f"builtin:{TUNED}")))
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=48, do_sample=False)
    expected = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert choice.message.content == expected
    # reasoning and answer as their own fields, next to the unchanged content
    extra = choice.message.model_extra
    assert extra["answer"] is not None and extra["answer"] in choice.message.content
    assert reply.usage.prompt_tokens == ids.shape[1]


def test_streamed_answer_equals_the_whole_one(client, questions):
    messages = questions[1]
    whole = client.chat.completions.create(model=TUNED, messages=messages, max_tokens=48, temperature=0)
    stream = client.chat.completions.create(model=TUNED, messages=messages, max_tokens=48, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3 and text == whole.choices[0].message.content
    final = [c.choices[0] for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].delta.model_extra.get("answer") == whole.choices[0].message.model_extra["answer"]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_two_adapters_and_the_base_answer_differently(client, questions):
    answers = {}
    for model in (BASE, TUNED, NOISE):
        answers[model] = [client.chat.completions.create(model=model, messages=q, max_tokens=32, temperature=0)
                          .choices[0].message.content for q in questions[:4]]
    assert answers[TUNED] != answers[NOISE] and answers[BASE] != answers[NOISE] and answers[BASE] != answers[TUNED]


def test_completions_with_n_stop_seed_and_top_p(client):
    kwargs = dict(model=TUNED, prompt="<reasoning>\n", max_tokens=24, temperature=1.0, top_p=0.9, n=3, seed=7)
    first = client.completions.create(**kwargs)
    again = client.completions.create(**kwargs)
    assert len(first.choices) == 3 and [c.text for c in first.choices] == [c.text for c in again.choices]
    assert 3 <= first.usage.completion_tokens <= 3 * 24 and len({c.text for c in first.choices}) > 1  # sampled, not copies
    stopped = client.completions.create(model=TUNED, prompt="<reasoning>\n", max_tokens=48, temperature=0, stop=["\n"])
    assert "\n" not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"


BAD_REQUESTS = [
    ("malformed JSON", "/v1/chat/completions", b'{"model": "arithmetic-tuned", "messages": ['),
    ("messages not a list", "/v1/chat/completions", {"model": TUNED, "messages": "hi"}),
    ("max_tokens a string", "/v1/chat/completions", {"model": TUNED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}),
    ("temperature negative", "/v1/chat/completions", {"model": TUNED, "messages": [{"role": "user", "content": "hi"}], "temperature": -1}),
    ("unknown model", "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
    ("empty messages", "/v1/chat/completions", {"model": TUNED, "messages": []}),
    ("max_tokens 0", "/v1/chat/completions", {"model": TUNED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
    ("max_tokens negative", "/v1/completions", {"model": TUNED, "prompt": "hi", "max_tokens": -5}),
    ("max_tokens over the context", "/v1/chat/completions", {"model": TUNED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}),
    ("prompt over the context", "/v1/completions", {"model": TUNED, "prompt": "1 + 2 = 3. " * 400, "max_tokens": 4}),
    ("n zero", "/v1/completions", {"model": BASE, "prompt": "hi", "n": 0}),
]


@pytest.mark.parametrize("what, route, body", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_client_errors_answer_4xx_with_openais_error_body(server, what, route, body):
    url = server[0]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(url + route, content=content, headers={"Content-Type": "application/json"}, timeout=60)
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])
    error = r.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error) and error["message"], (what, r.text[:300])


def _answer(http: httpx.Client, url: str, m: Mutation) -> tuple[int, str]:
    r = http.request(m.method, url + m.route, content=m.body, headers=m.headers)
    return r.status_code, r.text


def _ask_concurrently(client, questions, count: int) -> list:
    """``count`` valid requests at once: chat (streamed every fourth) and completions, over the four models."""
    def ask(i):
        model = (BASE, TUNED, NOISE, PREFIXED)[i % 4]
        if i % 5 == 4:
            return client.completions.create(model=model, prompt="<reasoning>\n", max_tokens=16, temperature=0.7, seed=i)
        kwargs = dict(model=model, messages=questions[i % len(questions)], max_tokens=16, temperature=0.7)
        if i % 4 == 3:
            return list(client.chat.completions.create(**kwargs, stream=True))
        return client.chat.completions.create(**kwargs)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(ask, range(count)))


def test_malformed_request_battery_then_64_concurrent_requests(server, client, questions):
    """Hundreds of requests OpenAI refuses (serve_battery.py): each gets a 4xx with OpenAI's error
    body naming the parameter, none a 5xx or a 200; then the server is healthy and answers 64
    concurrent valid requests, reasoning/answer fields included."""
    from grpo_ray.serve.validation import MAX_BODY_BYTES

    url = server[0]
    mutations = battery(TUNED, random_count=200, seed=20261201, max_body_bytes=MAX_BODY_BYTES)
    assert len(mutations) > 700
    with httpx.Client(timeout=120) as http, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda m: _answer(http, url, m), mutations))
    short = [(m.name, *why) for m, (status, text) in zip(mutations, answers) if (why := problem(m, status, text))]
    statuses = Counter(status for status, _ in answers)
    kinds = Counter(kind for _, kind, _ in short)
    summary = (f"{len(short)} of {len(mutations)} malformed requests fell short of OpenAI's contract "
               f"({', '.join(f'{kinds[k]} {k}' for k in SHORTFALLS if kinds[k])}); statuses {dict(sorted(statuses.items()))}")
    print(summary)
    assert not short, summary + ":\n" + "\n".join(f"{name}: {why}" for name, _, why in short[:60])

    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    replies = _ask_concurrently(client, questions, 64)
    assert len(replies) == 64
    for reply in replies:  # every kind finished, with the answer field beside the text
        if isinstance(reply, list):  # a stream: its final chunk carries the fields
            final = [c.choices[0] for c in reply if c.choices and c.choices[0].finish_reason]
            assert len(final) == 1 and "answer" in final[0].delta.model_extra
        elif hasattr(reply.choices[0], "message"):
            assert reply.choices[0].finish_reason and "answer" in reply.choices[0].message.model_extra
        else:
            assert reply.choices[0].finish_reason and "answer" in reply.choices[0].model_extra
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    assert {m.id for m in client.models.list().data} == MODELS


def _engine_text(client, model, ids, max_tokens) -> str:
    """What the engine generates greedily after exactly these prompt token ids (no chat template)."""
    return client.completions.create(model=model, prompt=ids, max_tokens=max_tokens, temperature=0).choices[0].text


def test_a_tuned_run_is_asked_as_in_training(server, client, questions, run_out):
    """A chat request to the run's adapter gets the run's system prompt, demonstration and assistant
    prefix: the greedy reply is the prefix plus what the engine writes after the prompt training
    built (encode_prompts on recipe.messages(question)), streamed or not, with the reasoning/answer
    fields of the whole reply; a client's own system prompt or trailing assistant message is kept."""
    from transformers import AutoTokenizer

    from grpo_ray.data.prompts import question_of
    from grpo_ray.models.paths import resolve_adapter_path, resolve_model_path
    from grpo_ray.models.run_prompt import run_prompt
    from grpo_ray.rollout.prompting import encode_prompts
    from grpo_ray.serve.reasoning import split_reasoning

    printed = server[2]
    ckpt = resolve_adapter_path(str(run_out))
    assert f"{PREFIXED} <- {ckpt.parent / 'config.yaml'}" in printed and "1 demonstration(s)" in printed
    assert f"{TUNED} <- " not in printed  # the shipped adapter has no run beside it
    tok = AutoTokenizer.from_pretrained(resolve_model_path(f"builtin:{BASE}"))
    recipe = run_prompt(str(ckpt)).recipe()
    assert recipe.assistant_prefix == PREFIX and len(recipe.demonstrations) == 1 and recipe.system_prompt
    for q in questions[:2]:
        question = question_of(q)
        ids = encode_prompts(tok, [recipe.messages(question)])[0]
        expected = PREFIX + _engine_text(client, PREFIXED, ids, 48)
        user = [{"role": "user", "content": question}]
        reply = client.chat.completions.create(model=PREFIXED, messages=user, max_tokens=48, temperature=0)
        message = reply.choices[0].message
        assert message.content == expected and reply.usage.prompt_tokens == len(ids)
        fields = split_reasoning(expected)
        assert {k: message.model_extra[k] for k in fields} == fields
        stream = list(client.chat.completions.create(model=PREFIXED, messages=user, max_tokens=48, temperature=0,
                                                     stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected
        final = [c.choices[0] for c in stream if c.choices and c.choices[0].finish_reason]
        assert final[0].delta.model_extra["reasoning"] == fields["reasoning"]

    own_system = [{"role": "system", "content": "Reply with the number only."}, *user]
    ids = encode_prompts(tok, [[own_system[0], *recipe.messages(question)[1:]]])[0]
    reply = client.chat.completions.create(model=PREFIXED, messages=own_system, max_tokens=32, temperature=0)
    assert reply.choices[0].message.content == PREFIX + _engine_text(client, PREFIXED, ids, 32)
    own_start = [*user, {"role": "assistant", "content": "<reasoning>\nFirst,"}]  # continued, as vLLM does it
    ids = encode_prompts(tok, [[*recipe.messages(question)[:-1], own_start[-1]]])[0]
    reply = client.chat.completions.create(model=PREFIXED, messages=own_start, max_tokens=32, temperature=0,
                                           extra_body={"continue_final_message": True, "add_generation_prompt": False})
    assert reply.choices[0].message.content == _engine_text(client, PREFIXED, ids, 32)  # only the continuation


def test_bad_adapter_is_one_line_before_ray_starts(tmp_path):
    done = subprocess.run([grpo_ray_exe(), "serve", "--model", f"builtin:{BASE}", "--adapter", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing" in lines[0] and "no such folder" in lines[0]
