"""What each training process runs: ``torchrun`` starts one per rank (TorchDistributor).

:func:`train_process` takes a plain dict (it is pickled to the processes) and:

1. joins the process group (gloo on CPU, NCCL on GPU) and chooses Keras'
   PyTorch backend before Keras is imported;
2. builds the registry backbone (``weights``: the resolved file the driver put
   in the output location) and a new softmax head on the standardised pooled
   features (their mean and variance over the training set, all-reduced), and
   wraps the Keras model
   in ``DistributedDataParallel``, so gradients are averaged across ranks;
3. reads its own shard (:mod:`~covidspark.finetune.shards`), decodes each image
   once as the featurizer does and keeps the model inputs in memory when they
   fit (else decodes per step), augments in DataLoader workers;
4. per epoch: re-samples for class balance, trains (batch normalisation in
   inference mode; any other non-trainable state is averaged across ranks, so
   every rank holds identical weights), evaluates
   on the validation shards (sums all-reduced), checkpoints (rank 0) and
   decides early stopping identically on every rank;
5. every rank loads the best epoch's weights; rank 0 writes the backbone as a Keras weights file (what
   ``DeepImageFeaturizer(weights=...)`` loads on every engine) and the head's
   kernel and bias on the raw features (standardisation folded in); every rank writes a digest of its final weights.

Nothing but the history and paths returns to the driver.
"""
import hashlib
import json
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

logger = logging.getLogger("covidspark")

BACKBONE_FILE = "backbone.weights.h5"
HEAD_FILE = "head.npz"
MODEL_FILE = "model.weights.h5"
#: Pre-decoded inputs are kept in memory up to this many MB per rank.
CACHE_MB_ENV = "COVIDSPARK_FINETUNE_CACHE_MB"


def build_classifier(backbone, spec, n_classes, mean, variance):
    """``backbone`` + feature standardisation + a Dense head giving logits.

    The head sees the pooled features standardised with the starting
    backbone's training-set ``mean`` and ``variance`` (as MLlib's logistic
    regression standardises): without it a head on a random or pretrained
    backbone's raw features learns slowly. The standardisation is affine, so
    :func:`folded_head` folds it into the head's kernel and bias.
    """
    import keras

    inputs = keras.Input(shape=(spec.input_size, spec.input_size, 3))
    # Batch normalisation stays in inference mode, as Keras' transfer-learning guide
    # advises: its statistics are the pretrained ones, a fine-tuning batch of a few
    # dozen X-rays would only disturb them, and training then computes exactly what
    # prediction computes (and every rank holds the same statistics).
    features = backbone(inputs, training=False)
    standardised = keras.layers.Normalization(mean=mean, variance=variance,
                                              name="standardise")(features)
    logits = keras.layers.Dense(n_classes, name="head")(standardised)
    return keras.Model(inputs, logits, name=f"{spec.name}_finetuned")


def folded_head(model):
    """``(kernel, bias)`` of the head acting on raw pooled features (standardisation folded in).

    Keras' Normalization computes ``(f - mean) / max(sqrt(variance), epsilon)``.
    """
    import keras

    kernel, bias = (np.asarray(w, np.float64) for w in model.get_layer("head").get_weights())
    norm = model.get_layer("standardise")
    mean = np.asarray(keras.ops.convert_to_numpy(norm.mean), np.float64).reshape(-1)
    std = np.sqrt(np.asarray(keras.ops.convert_to_numpy(norm.variance), np.float64).reshape(-1))
    scale = 1.0 / np.maximum(std, keras.config.epsilon())
    return kernel * scale[:, None], bias - (mean * scale) @ kernel


def feature_moments(backbone, data, batch_size, model_input, dist):
    """Mean and variance of the pooled features of ``data`` (an epoch's samples), all ranks.

    Measured on augmented images, as the head will see them in training.
    ``model_input`` takes a CPU batch of grey images to the model's input on its device.
    """
    import torch

    dim = None
    sums = None
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            x = model_input(torch.from_numpy(np.stack([data[k][0] for k in range(
                start, min(start + batch_size, len(data)))])))
            f = backbone(x, training=False).double()
            count = torch.tensor([len(x)], device=x.device, dtype=torch.float64)
            part = torch.cat([f.sum(0), (f * f).sum(0), count])
            sums = part if sums is None else sums + part
            dim = f.shape[1]
    if dist.is_initialized():
        dist.all_reduce(sums)
    sums = sums.cpu().numpy()
    n = sums[-1]
    mean = sums[:dim] / n
    return mean, np.maximum(sums[dim:2 * dim] / n - mean * mean, 0.0)


def set_phase(model, backbone, phase, unfreeze):
    """Make the head (phase ``"head"``) or the head and (part of) the backbone trainable."""
    backbone.trainable = phase != "head"
    if phase != "head" and unfreeze != "all":
        for layer in backbone.layers[:-int(unfreeze)]:
            layer.trainable = False
    trainable = {id(v.value) for v in model.trainable_variables}
    for v in model.variables:
        if v.value.is_floating_point():
            v.value.requires_grad_(id(v.value) in trainable)
    return [v.value for v in model.trainable_variables]


def weights_digest(model):
    """sha256 over every variable of ``model`` (trainable and not), in order."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def epoch_samples(labels, n_draws, balance, seed, epoch, rank):
    """Indices into the rank's training rows for one epoch (seeded by epoch and rank).

    ``"resample"`` draws each class equally often (with replacement);
    otherwise a permutation, repeated to fill ``n_draws``.
    """
    rng = np.random.default_rng([seed, epoch, rank])
    if balance == "resample":
        classes, counts = np.unique(labels, return_counts=True)
        p = (1.0 / counts[np.searchsorted(classes, labels)]) / len(classes)
        return rng.choice(len(labels), size=n_draws, replace=True, p=p / p.sum())
    reps = math.ceil(n_draws / len(labels))
    return np.concatenate([rng.permutation(len(labels)) for _ in range(reps)])[:n_draws]


class _Inputs:
    """The rank's images as model inputs: decoded once into memory when they fit."""

    def __init__(self, shard, size, cache_mb):
        from covidspark.data.decoding import decode_image

        self.content, self.ids, self.size = shard["content"], shard["image_id"], size
        self._decode = decode_image
        self.cached = None
        if len(self.content) * size * size * 4 <= cache_mb * 1e6:
            # Pillow releases the GIL while it decodes and resizes: threads use every core.
            with ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="decode") as pool:
                self.cached = np.stack(list(pool.map(self._gray, range(len(self.content)))))
            self.content = None

    def _gray(self, i):
        return self._decode(self.content[i], self.size, name=self.ids[i], compact=True)

    def pixels(self, i):
        """Image ``i`` as grey ``(size, size)`` float32 in [0, 255]."""
        gray = self.cached[i] if self.cached is not None else self._gray(i)
        return gray.astype(np.float32, copy=False)


class _EpochData:
    """A map-style dataset of one epoch: (row, augmentation seed) pairs, for a DataLoader.

    Items are augmented grey images ``(size, size)``; the rank makes the model input on its
    device (:func:`~covidspark.models.torch_engine.model_input_function`).
    """

    def __init__(self, inputs, rows, labels, recipe, seed_base, augment):
        self.inputs, self.rows, self.labels = inputs, rows, labels
        self.recipe = recipe
        self.seed_base, self.augment = seed_base, augment

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, k):
        from covidspark.finetune.augment import augment

        row = int(self.rows[k])
        x = self.inputs.pixels(row)
        if self.augment:
            x = augment(x, self.recipe, np.random.default_rng([*self.seed_base, k]))
        return x, int(self.labels[row])


def _loader(dataset, batch_size, workers):
    import torch

    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                       num_workers=workers, pin_memory=torch.cuda.is_available(),
                                       persistent_workers=False)


def _all_reduce_sum(values, dist, device):
    import torch

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.cpu().tolist()


def _average_statistics(model, dist, world):
    """Average the non-trainable float variables across ranks (identical unless a layer updates them)."""
    if not dist.is_initialized() or world == 1:
        return
    for v in model.non_trainable_variables:
        t = v.value
        if t.is_floating_point():
            data = t.data.clone()
            dist.all_reduce(data)
            t.data.copy_(data / world)


def train_process(config):
    """Train on this rank's shard; rank 0 returns the history and the written files.

    Parameters
    ----------
    config : dict
        ``model_name``, ``weights`` (URI of the starting weights), ``started_from``
        (their ``description`` and ``pretrained``, recorded in the backbone file), ``labels``,
        ``table`` (the shards), ``out`` (output location), ``recipe`` (dict of
        :class:`~covidspark.finetune.recipe.Recipe`), ``use_gpu``,
        ``precision`` ("float32" or "bfloat16"), ``threads`` (CPU threads per rank).
    """
    from covidspark.models.keras_backend import require_keras_backend
    from covidspark.runtime.processes import exit_with_parent

    exit_with_parent()
    require_keras_backend("torch", engine="fine-tuning")
    import keras
    import torch
    import torch.distributed as dist

    from covidspark.finetune import checkpoints
    from covidspark.finetune.recipe import Recipe
    from covidspark.finetune.shards import read_manifest, read_shard
    from covidspark.models.registry import build_backbone, get_backbone
    from covidspark.models.torch_engine import model_input_function
    from covidspark.models.weights import resolve_weights
    from covidspark.runtime.filesystem import Files, join

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    use_gpu = bool(config.get("use_gpu")) and torch.cuda.is_available()
    if world > 1:
        dist.init_process_group("nccl" if use_gpu else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_gpu else "cpu")
    if use_gpu:
        torch.cuda.set_device(device)
        # Every step has the same shapes (but an epoch's last): cuDNN picks each
        # convolution's fastest algorithm once.
        torch.backends.cudnn.benchmark = True
    elif config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    recipe = Recipe(**config["recipe"])
    spec = get_backbone(config["model_name"])
    files, out = Files(), config["out"]
    labels = config["labels"]
    manifest = read_manifest(config["table"])
    if manifest["world"] != world:
        raise RuntimeError(f"the image table has {manifest['world']} shards for {world} ranks")

    # The driver's starting weights, as a local file (a copy in the cache when remote).
    weights_path = (resolve_weights(spec.name, config["weights"], files=files).path
                    if config.get("weights") else None)
    shard = read_shard(config["table"], rank)
    started = time.time()
    inputs = _Inputs(shard, spec.input_size, float(os.environ.get(CACHE_MB_ENV, 2048)))
    train_rows = np.flatnonzero(shard["is_train"])
    val_rows = np.flatnonzero(~shard["is_train"])
    train_labels = shard["label_index"][train_rows]
    n_train = sum(manifest["counts"].get("train", {}).values())
    steps = math.ceil(n_train / (world * recipe.batch_size))
    model_input = model_input_function(spec, device)
    with keras.device(str(device)):
        backbone = build_backbone(spec, weights_path, seed=recipe.seed)
        backbone.to(device)
        sample = _EpochData(inputs, train_rows, shard["label_index"], recipe,
                            (recipe.seed, 1 << 30, rank), augment=recipe.augments)
        mean, variance = feature_moments(backbone, sample, recipe.batch_size, model_input,
                                         dist)
        model = build_classifier(backbone, spec, len(labels), mean, variance)
    model.to(device)
    logger.info("rank %d/%d: %d train + %d validation images (decoded in %.1f s, %s), "
                "%d steps/epoch on %s", rank, world, len(train_rows), len(val_rows),
                time.time() - started, "cached" if inputs.cached is not None else "per step",
                steps, device)

    class_weights = None
    if recipe.balance == "weights":
        counts = np.array([manifest["counts"]["train"].get(x, 0) for x in labels], float)
        class_weights = torch.tensor(counts.sum() / (len(labels) * np.maximum(counts, 1)),
                                     dtype=torch.float32, device=device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_weights, reduction="sum")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=config.get("precision") == "bfloat16")

    ckpt_dir = join(out, "checkpoints")
    history, best = [], {"epoch": None, "val_loss": math.inf, "stale": 0}
    start_epoch, resumed = 0, checkpoints.latest_checkpoint(ckpt_dir)
    if resumed is not None:
        start_epoch = resumed[0] + 1
        history, best = resumed[2]["history"], resumed[2]["best"]
        if rank == 0:
            logger.info("resuming from the checkpoint of epoch %d (%s)", resumed[0] + 1,
                        resumed[1])
    phase, optimizer, ddp = None, None, None
    stopped_early = False
    for epoch in range(start_epoch, recipe.epochs):
        if best["stale"] >= (recipe.patience or math.inf):
            stopped_early = True
            break
        name, lr = recipe.phase(epoch)
        if name != phase:
            params = set_phase(model, backbone, name, recipe.unfreeze)
            optimizer = torch.optim.Adam(params, lr=lr)
            ddp = (torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if use_gpu else None)
                if dist.is_initialized() else model)
            if resumed is not None and epoch == start_epoch:
                same_phase = recipe.phase(resumed[0])[0] == name
                checkpoints.load_checkpoint(resumed[1], model, optimizer if same_phase else None)
            phase = name
        t0 = time.time()
        rows = train_rows[epoch_samples(train_labels, steps * recipe.batch_size, recipe.balance,
                                        recipe.seed, epoch, rank)]
        data = _EpochData(inputs, rows, shard["label_index"], recipe,
                          (recipe.seed, epoch, rank), augment=recipe.augments)
        model.train()
        totals = [0.0, 0.0, 0.0]  # loss sum, correct, images
        train_started = time.time()
        for x, y in _loader(data, recipe.batch_size, recipe.loader_workers):
            x = model_input(x)
            y = y.to(device, non_blocking=True)
            with autocast:
                logits = ddp(x, training=True)
            loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            (loss / len(y)).backward()
            optimizer.step()
            totals[0] += float(loss.detach())
            totals[1] += float((logits.argmax(1) == y).sum())
            totals[2] += len(y)
        train_seconds = time.time() - train_started  # the float() calls above synchronise
        _average_statistics(model, dist, world)
        val = _evaluate(model, inputs, val_rows, shard["label_index"], model_input,
                        recipe.batch_size, device, autocast, loss_fn)
        train_sum = _all_reduce_sum(totals, dist, device)
        val_sum = _all_reduce_sum(val, dist, device)
        record = {"epoch": epoch + 1, "phase": name, "lr": lr,
                  "train_loss": train_sum[0] / max(train_sum[2], 1),
                  "train_accuracy": train_sum[1] / max(train_sum[2], 1),
                  "val_loss": val_sum[0] / val_sum[2] if val_sum[2] else None,
                  "val_accuracy": val_sum[1] / val_sum[2] if val_sum[2] else None,
                  "images": int(train_sum[2]), "seconds": round(time.time() - t0, 2)}
        record["images_per_s"] = round(record["images"] / max(record["seconds"], 1e-9), 2)
        # Training steps alone (loader start-up included; validation and all-reduces not),
        # per process: the throughput a GPU sustains.
        record["train_images_per_s"] = round(totals[2] / max(train_seconds, 1e-9), 2)
        history.append(record)
        watched = record["val_loss"] if record["val_loss"] is not None else record["train_loss"]
        improved = watched < best["val_loss"]
        if improved:
            best = {"epoch": epoch + 1, "val_loss": watched, "stale": 0}
        else:
            best["stale"] += 1
        if rank == 0:
            logger.info("epoch %d/%d (%s, lr %g): train loss %.4f acc %.3f | validation loss "
                        "%s acc %s | %.1f images/s", epoch + 1, recipe.epochs, name, lr,
                        record["train_loss"], record["train_accuracy"],
                        _fmt(record["val_loss"]), _fmt(record["val_accuracy"]),
                        record["images_per_s"])
            if improved:
                files.write_bytes(join(ckpt_dir, "best.weights.h5"),
                                  checkpoints.save_weights_bytes(model))
            checkpoints.save_checkpoint(ckpt_dir, epoch, model, optimizer,
                                        {"history": history, "best": best})
        if dist.is_initialized():
            dist.barrier()

    # Every rank keeps the best epoch's weights, then reports what it holds.
    if best["epoch"] is not None:
        checkpoints.load_weights_bytes(model, files.read_bytes(join(ckpt_dir,
                                                                    "best.weights.h5")))
    digest = weights_digest(model)
    files.write_text(join(out, "ranks", f"rank-{rank}.json"), json.dumps({
        "rank": rank, "world": world, "weights_sha256": digest,
        "train_images": len(train_rows), "validation_images": len(val_rows),
        "shard_ids_sha256": hashlib.sha256("\n".join(shard["image_id"]).encode()).hexdigest(),
        "device": str(device)}))
    if rank == 0:
        # The backbone says what it started from: from random weights, it is reported
        # as no pretrained network wherever it goes (serve, train --weights).
        files.write_bytes(join(out, BACKBONE_FILE), checkpoints.save_weights_bytes(
            backbone, fine_tuned_from=config.get("started_from")))
        files.write_bytes(join(out, MODEL_FILE), checkpoints.save_weights_bytes(model))
        kernel, bias = folded_head(model)
        # The standardisation's moments are constants of the Normalization layer, not
        # weights: MODEL_FILE plus these two rebuild the trained network exactly.
        with files.open_write(join(out, HEAD_FILE)) as f:
            np.savez(f, kernel=kernel, bias=bias, mean=mean, variance=variance)
    # Every rank returns the same (all-reduced) result: in local mode TorchDistributor
    # keeps whichever process wrote its output file last.
    result = {"history": history, "best_epoch": best["epoch"], "stopped_early": stopped_early,
              "world": world, "device": device.type, "weights_sha256": digest,
              "backbone": join(out, BACKBONE_FILE), "head": join(out, HEAD_FILE),
              "ranks": join(out, "ranks")}
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return result


def _fmt(value):
    return "-" if value is None else f"{value:.4f}"


def _evaluate(model, inputs, rows, labels, model_input, batch_size, device, autocast,
              loss_fn):
    """``[loss sum, correct, images]`` over ``rows`` (no augmentation, inference mode)."""
    import torch

    model.eval()
    totals = [0.0, 0.0, 0.0]
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            x = model_input(torch.from_numpy(np.stack([inputs.pixels(int(r)) for r in chunk])))
            y = torch.from_numpy(labels[chunk]).to(device)
            with autocast:
                logits = model(x, training=False)
            totals[0] += float(loss_fn(logits.float(), y))
            totals[1] += float((logits.argmax(1) == y).sum())
            totals[2] += len(chunk)
    return totals
