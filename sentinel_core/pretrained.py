"""What HF users reach for on a model, on both paths (native decoder, generic wrapper): from_pretrained,
num_parameters and save_pretrained's keyword arguments, meaning what they mean on a transformers model."""

from __future__ import annotations

from torch import nn

from .errors import InputError


class PretrainedLike:
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, device="cpu", dtype=None, torch_dtype=None,
                        revision=None, trust_remote_code: bool = False):
        """load_adaptive_model(...): the adaptive model of a hub id, a local folder, a .gguf file or a folder
        saved by save_pretrained. A family without a native converter comes back as the generic gated wrapper
        (`adaptive_path` says which), whichever class this is called on, as AutoModel's from_pretrained does."""
        # Through the package's public name: the loader builds these classes, so importing it from here would
        # make the model classes and the loader import each other.
        import sentinel_core

        return sentinel_core.load_adaptive_model(pretrained_model_name_or_path, device=device, dtype=dtype,
                                   torch_dtype=torch_dtype, revision=revision, trust_remote_code=trust_remote_code)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """As HF's: every parameter once (tied ones once), the gates included, since they are parameters too;
        `exclude_embeddings` leaves out the token and position embedding tables."""
        embeddings = {id(module.weight) for module in self.modules() if isinstance(module, nn.Embedding)}
        return sum(p.numel() for p in self.parameters()
                   if (p.requires_grad or not only_trainable) and not (exclude_embeddings and id(p) in embeddings))


def save_options(safe_serialization: bool = True, **unsupported) -> None:
    """save_pretrained's HF keywords that this format can honour (safetensors only); any other one, refused."""
    if safe_serialization is not True:
        raise InputError("save_pretrained writes safetensors only: drop safe_serialization=False")
    if unsupported:
        name = sorted(unsupported)[0]
        raise InputError(f"save_pretrained() got {name}=, which an adaptive model's save does not take: drop it "
                         f"(to publish, save into a folder and upload that folder)")
