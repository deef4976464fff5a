"""``ipt eval``: a trained model on lm-evaluation-harness tasks, one JSON result file per run.

The model is loaded here — an exported Hugging Face directory (``config.json`` + safetensors) or a
Composer checkpoint (``.pt``, or a ``save_folder`` holding ``latest-rank0.pt``) — with the attention
implementation asked for, and handed to lm-eval's own Hugging Face model class (``HFLM`` with a model
object), so every task runs exactly as lm-eval runs it for any hub model.

Tasks named ``ipt_*`` are ours: YAML files shipped in :mod:`ipt_engine.eval.tasks`, read at run time
into a temporary ``include_path`` with their ``data_files`` pointed at the ``--data`` directory, so they
run offline. Any other name is one of lm-eval's own tasks (PIQA, HellaSwag, PubMedQA, ...), which
download their data sets from the Hugging Face hub and so run only where it is reachable.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ipt_engine.errors import UserError

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).parent / "tasks"
#: ``--attn`` choices: transformers' own implementations and ours (document-masked, registered with
#: transformers; without packed metadata they run causal SDPA over each row).
ATTN_CHOICES = ("sdpa", "eager", "packed", "flex")
#: Metrics whose per-document values are averaged into the task score, so a paired standard error of a
#: difference can be computed from the per-document values of two runs.
MEAN_METRICS = ("acc", "acc_norm", "exact_match")


def shipped_tasks() -> dict[str, Path]:
    """Task name -> YAML file of every task shipped in the package."""
    import yaml

    out = {}
    for path in sorted(TASKS_DIR.glob("*.yaml")):
        out[yaml.safe_load(path.read_text())["task"]] = path
    return out


def _composer_checkpoint(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".pt":
        return path
    if path.is_dir() and (path / "latest-rank0.pt").exists():
        return (path / "latest-rank0.pt").resolve()
    return None


def load_model(path: str | Path, *, attn: str = "sdpa", device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """``(model, tokenizer)`` from an exported HF directory or a Composer checkpoint, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ipt_engine.train.attention import REGISTERED, register_attention

    if attn not in ATTN_CHOICES:
        raise UserError(f"--attn: expected one of {', '.join(ATTN_CHOICES)}, got {attn!r}")
    register_attention()
    impl = REGISTERED[attn] if attn in ("packed", "flex") else attn
    torch_dtype = getattr(torch, dtype)
    p = Path(path)
    if (p / "config.json").is_file():
        try:
            model = AutoModelForCausalLM.from_pretrained(p, attn_implementation=impl, torch_dtype=torch_dtype)
            tokenizer = AutoTokenizer.from_pretrained(p)
        except (OSError, ValueError) as e:
            raise UserError(f"{p}: cannot load the model: {(str(e).strip().splitlines() or ['?'])[0]}") from None
    elif (ckpt := _composer_checkpoint(p)) is not None:
        model, tokenizer = _from_composer_checkpoint(ckpt, impl, torch_dtype)
    else:
        raise UserError(f"{p}: neither a Hugging Face model directory (config.json) nor a Composer checkpoint "
                        "(.pt, or a save_folder with latest-rank0.pt)")
    return model.to(device).eval(), tokenizer


def _from_composer_checkpoint(ckpt: Path, impl: str, torch_dtype: Any) -> tuple[Any, Any]:
    """The Hugging Face model and tokenizer Composer's ``HuggingFaceModel`` recorded in a checkpoint."""
    import torch
    from composer.models import HuggingFaceModel
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["state"]
        hf_state = state["integrations"]["huggingface"]
        content = dict(hf_state["model"]["config"]["content"])
    except (OSError, KeyError, RuntimeError) as e:
        raise UserError(f"{ckpt}: not a Composer checkpoint of a Hugging Face model ({type(e).__name__}: {e})") from None
    content.pop("_attn_implementation", None)
    model_type = content.get("model_type")
    config = AutoConfig.for_model(model_type, **{k: v for k, v in content.items() if k != "model_type"})
    model = AutoModelForCausalLM.from_config(config, attn_implementation=impl, torch_dtype=torch.float32)
    weights = {k.removeprefix("model."): v for k, v in state["model"].items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise UserError(f"{ckpt}: weights do not match the recorded config "
                        f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    if tied:
        model.tie_weights()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = HuggingFaceModel.load_huggingface_tokenizer_from_saved_state(hf_state, tokenizer_save_dir=tmp)
    if tokenizer is None:
        raise UserError(f"{ckpt}: the checkpoint holds no tokenizer")
    return model.to(torch_dtype), tokenizer


def find_data_dir(model_path: str | Path) -> Path | None:
    """The nearest ``eval-data`` directory beside the model or one of its parents (``ipt pipeline``
    writes ``<workdir>/eval-data`` and trains under ``<workdir>/train``)."""
    p = Path(model_path).resolve()
    for parent in [p, *p.parents]:
        cand = parent / "eval-data"
        if (cand / "info.json").is_file():
            return cand
    return None


def _include_dir(tasks: Sequence[str], data_dir: Path | None, tmp: Path) -> Path:
    """Copies of the shipped task YAMLs with ``data_files`` pointing into ``data_dir``."""
    import yaml

    shipped = shipped_tasks()
    for name in tasks:
        if name not in shipped:
            continue
        if data_dir is None:
            raise UserError(f"--tasks {name}: needs --data DIR (the held-out JSONL that `ipt pipeline` writes "
                            "to <workdir>/eval-data, or `ipt eval --make-data`)")
        cfg = yaml.safe_load(shipped[name].read_text())
        files = cfg["dataset_kwargs"]["data_files"]
        for split, rel in files.items():
            target = data_dir / rel
            if not target.is_file():
                raise UserError(f"--tasks {name}: {target} not found")
            if target.stat().st_size == 0:
                raise UserError(f"--tasks {name}: {target} holds no items (too few held-out documents?)")
            files[split] = str(target.resolve())
        (tmp / shipped[name].name).write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return tmp


def _stderr(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _summarize(raw: dict[str, Any], tasks: Sequence[str]) -> dict[str, Any]:
    """lm-eval's result dict -> ours: per task, each metric's value and standard error, and per-document
    values of mean metrics (by ``doc_id``) for paired comparisons."""
    out: dict[str, Any] = {}
    samples = raw.get("samples") or {}
    for task, res in (raw.get("results") or {}).items():
        metrics: dict[str, Any] = {}
        for key, value in res.items():
            if key in ("alias", "sample_len") or "_stderr," in key or key.startswith("sample_len,"):
                continue
            name, _, filt = key.partition(",")
            if not isinstance(value, (int, float)):
                continue
            metrics[name] = {"value": float(value), "stderr": _stderr(res.get(f"{name}_stderr,{filt}")),
                             "filter": filt or None}
        per_doc: dict[str, list[list[float]]] = {}
        for s in samples.get(task, []):
            for m in MEAN_METRICS:
                if m in s and m in metrics:
                    per_doc.setdefault(m, []).append([int(s["doc_id"]), float(s[m])])
        n = (raw.get("n-samples") or {}).get(task, {}).get("effective")
        out[task] = {"metrics": metrics, "n": n, "per_doc": {m: sorted(v) for m, v in per_doc.items()}}
    return out


def evaluate(model_path: str | Path, tasks: Sequence[str], *, data_dir: str | Path | None = None,
             attn: str = "sdpa", device: str = "cpu", dtype: str = "float32", batch_size: int = 8,
             num_fewshot: int | None = None, limit: int | None = None, max_length: int | None = None,
             seed: int = 0) -> dict[str, Any]:
    """Run ``tasks`` on the model at ``model_path``; return the result record ``ipt eval`` writes."""
    if not tasks:
        raise UserError("--tasks: name at least one task (e.g. ipt_heldout_qa)")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    shipped = shipped_tasks()
    if all(t in shipped for t in tasks):
        # Only local files are read: never wait on a hub lookup (the `json` builder needs none).
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    data = Path(data_dir) if data_dir is not None else find_data_dir(model_path)
    model, tokenizer = load_model(model_path, attn=attn, device=device, dtype=dtype)
    if attn in ("packed", "flex") and batch_size != 1:
        # Without packed metadata our attention is causal over the whole row and ignores the padding
        # mask, which lm-eval needs for left-padded generation batches; one row at a time has no padding.
        log.info("--attn %s: batch size 1 (rows are not padded)", attn)
        batch_size = 1
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length,
              dtype=dtype, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        include = _include_dir(tasks, data, Path(tmp))
        only_ours = all(t in shipped for t in tasks)
        manager = TaskManager(include_path=str(include), include_defaults=not only_ours)
        unknown = [t for t in tasks if t not in manager.all_tasks]
        if unknown:
            raise UserError(f"--tasks: unknown task {unknown[0]!r} (ours: {', '.join(shipped)}; "
                            "lm-eval's own need the Hugging Face hub)")
        try:
            raw = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, num_fewshot=num_fewshot,
                                          limit=limit, log_samples=True, random_seed=seed, numpy_random_seed=seed,
                                          torch_random_seed=seed, fewshot_random_seed=seed, bootstrap_iters=1000)
        except (ConnectionError, OSError) as e:
            raise UserError(f"lm-eval could not load a task's data ({type(e).__name__}: "
                            f"{(str(e).strip().splitlines() or ['?'])[0]}); hub tasks need the Hugging Face hub") from None
    return {
        "format": "ipt-eval", "version": 1,
        "model": str(model_path), "data": str(data) if data is not None else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "lm_eval_version": getattr(lm_eval, "__version__", None),
        "settings": {"tasks": list(tasks), "attn": attn, "device": device, "dtype": dtype, "batch_size": batch_size,
                     "num_fewshot": num_fewshot, "limit": limit, "seed": seed},
        "tasks": _summarize(raw, tasks),
    }


def save_result(result: dict[str, Any], path: str | Path) -> tuple[Path, Path]:
    """Write the JSON record and its markdown table (``.md`` beside it); return both paths."""
    from ipt_engine.eval.report import result_table
    from ipt_engine.io.atomic import atomic_write_bytes, atomic_write_json

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    md = out.with_suffix(".md")
    atomic_write_bytes(md, (result_table(result) + "\n").encode())
    return out, md


def load_result(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"{p}: no such result file") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: not JSON ({e.msg})") from None
    if data.get("format") != "ipt-eval":
        raise UserError(f"{p}: not an `ipt eval` result file")
    return data
