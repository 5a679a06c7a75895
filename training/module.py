"""The LightningModule: the seed's two-stage schedule, losses, and validation through core's tiled inference."""

from __future__ import annotations

import tempfile

import lightning as L
import numpy as np
import rasterio
import torch
import torch.nn.functional as F

from core.checkpoint import Architecture, LoadReport, ModelInfo, Normalization, RoadModel
from core.extract import ExtractParams, extract_roads
from core.inference import normalize
from core.model import build_model
from core.raster import ArraySource

from .config import TrainConfig
from .data import IGNORE


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice of the road class over the pixels that are not ignored."""
    valid = (target != IGNORE).float()
    road = torch.softmax(logits.float(), dim=1)[:, 1] * valid
    truth = (target == 1).float()
    intersection = (road * truth).sum()
    return 1 - (2 * intersection + 1) / (road.sum() + truth.sum() + 1)


class RoadSegmentation(L.LightningModule):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = TrainConfig.from_dict(config)
        self.network = build_model(self.config.model_config())
        self.normalization = Normalization()
        self.register_buffer("class_weights", torch.tensor(self.config.class_weights, dtype=torch.float32),
                             persistent=False)
        self._confusion = np.zeros(4, np.int64)  # tp, fp, fn, tn over the validation tiles

    # ------------------------------------------------------------------------------------------ the two stages

    @property
    def stage(self) -> int:
        return 1 if self.current_epoch < self.config.stage1_epochs else 2

    def apply_stage(self) -> None:
        """Stage 1: the backbone's weights do not train and its BatchNorm layers keep their statistics (eval
        mode: `requires_grad=False` alone would still update the running means). Stage 2: everything trains."""
        frozen = self.stage == 1
        for parameter in self.network.backbone.parameters():
            parameter.requires_grad_(not frozen)
        # Lightning restores each submodule's own mode after validation, so stage 2 must switch it back itself.
        self.network.backbone.train(not frozen)

    def on_train_epoch_start(self) -> None:
        self.apply_stage()

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Lightning puts the whole module in train mode before each epoch; stage 1 keeps the backbone in eval.
        if self.stage == 1 and self.network.backbone.training:
            self.network.backbone.eval()
        self._set_learning_rates()

    def _set_learning_rates(self) -> None:
        """Poly (power 0.9) per iteration within each stage, computed from the global step so a resumed run
        continues on exactly the same curve."""
        steps_per_epoch = max(1, self.trainer.num_training_batches)
        c = self.config
        if self.stage == 1:
            base, done, total = c.lr_stage1, self.global_step, c.stage1_epochs * steps_per_epoch
        else:
            base = c.lr_stage2
            done = self.global_step - c.stage1_epochs * steps_per_epoch
            total = c.stage2_epochs * steps_per_epoch
        factor = max(0.0, 1 - done / max(total, 1)) ** 0.9
        backbone_group, head_group = self.optimizers().optimizer.param_groups
        backbone_group["lr"] = base * c.backbone_lr_factor * factor
        head_group["lr"] = base * factor

    def configure_optimizers(self):
        c = self.config
        groups = [{"params": list(self.network.backbone.parameters()), "name": "backbone"},
                  {"params": self.network.head_parameters(), "name": "head"}]
        if c.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=c.lr_stage1, momentum=0.9, weight_decay=c.weight_decay)
        if c.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=c.lr_stage1, weight_decay=c.weight_decay)
        raise ValueError(f"optimizer {c.optimizer!r} is not known; use sgd or adamw")

    # ------------------------------------------------------------------------------------------------ training

    def training_step(self, batch, batch_idx):
        images, target = batch
        logits = self.network(normalize(images, self.normalization))
        loss = F.cross_entropy(logits.float(), target, weight=self.class_weights, ignore_index=IGNORE)
        if self.config.loss == "ce_dice":
            loss = loss + dice_loss(logits, target)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/stage", float(self.stage))
        self.log("lr/head", self.optimizers().optimizer.param_groups[1]["lr"])
        return loss

    # ---------------------------------------------------------------------------------------------- validation

    def road_model(self) -> RoadModel:
        config = self.config.model_config()
        info = ModelInfo(config=config, gsd_m=self.config.gsd_m, normalization=self.normalization)
        return RoadModel(self.network, info, LoadReport("training", "training"), Architecture(config, {}))

    def on_validation_epoch_start(self) -> None:
        self._confusion[:] = 0

    def validation_step(self, batch, batch_idx) -> None:
        """A whole tile through core's tiled, blended, multi-scale inference: the figure a user would get."""
        image, target = (t[0].cpu().numpy() for t in batch)
        params = ExtractParams(tile=self.config.val_tile, overlap=self.config.val_overlap,
                               scales=tuple(self.config.val_scales), device=str(self.device), overwrite=True)
        with tempfile.TemporaryDirectory() as folder:
            source = ArraySource(image, gsd_m=self.config.gsd_m, valid=target != IGNORE)
            result = extract_roads(source, self.road_model(), folder, params)
            with rasterio.open(result.mask) as ds:
                predicted = ds.read(1)
        keep = target != IGNORE
        p, t = predicted[keep] == 1, target[keep] == 1
        self._confusion += np.array([(p & t).sum(), (p & ~t).sum(), (~p & t).sum(), (~p & ~t).sum()])

    def on_validation_epoch_end(self) -> None:
        tp, fp, fn, tn = (int(v) for v in self._confusion)
        total = tp + fp + fn + tn
        if not total:
            return
        road_iou = tp / max(tp + fp + fn, 1)
        background_iou = tn / max(tn + fp + fn, 1)
        self.log("val/road_iou", road_iou, prog_bar=True, sync_dist=True)
        self.log("val/background_iou", background_iou, sync_dist=True)
        self.log("val/miou", (road_iou + background_iou) / 2, sync_dist=True)
        self.log("val/miou_all_background", (tn + fp) / total / 2, sync_dist=True)
        self.log("val/f1", 2 * tp / max(2 * tp + fp + fn, 1), sync_dist=True)
