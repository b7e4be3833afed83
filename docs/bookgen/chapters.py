"""The curriculum: the order a learner takes, and what each chapter gathers.

A chapter lists the primitive modules (``funcdl.nn...``), the registered models, the optimizers, the notebooks
(by their number prefix) and the commands that belong to it. Anything registered later that no chapter names
still gets its page (the reference pages are generated from the registries) and is listed under the chapter
:func:`chapter_of_module` falls back to, so nothing is lost when the curriculum is not updated.
"""

from __future__ import annotations

CHAPTERS = [
    dict(slug="01_neurons", title="Neurons and activations",
         intro="A neuron is an affine map followed by a nonlinearity. Each activation below is a primitive whose "
               "page derives its derivative, shows the code of the forward and the hand-written backward side by "
               "side, and the check that holds the two together.",
         modules=["funcdl.nn.activations"], models=["logreg"], optimizers=[], notebooks=[],
         commands=["gradcheck", "catalog"]),
    dict(slug="02_mlp_backprop", title="MLPs and backpropagation",
         intro="Stacking dense layers and a loss gives a multi-layer perceptron; backpropagation is the chain rule "
               "applied layer by layer in reverse, each layer's backward written out by hand.",
         modules=["funcdl.nn.linear", "funcdl.nn.losses.classification", "funcdl.nn.losses.regression",
                  "funcdl.nn.losses.probabilistic", "funcdl.nn.dropout"],
         models=["mlp"], optimizers=[], notebooks=["01"], commands=["train", "gradcheck"]),
    dict(slug="03_optimization", title="Optimization and the training loop",
         intro="Optimizers are pure functions over parameter trees (the optax interface), each a chain of small "
               "transforms whose equations are in their docstrings; the training loop, schedules and clipping "
               "sit around them.",
         modules=[], models=[], optimizers=["*"], notebooks=["02", "03"], commands=["train", "plot"]),
    dict(slug="04_cnn", title="Convolutional networks",
         intro="Convolution, pooling and normalisation: their backward passes are convolutions and scatters read "
               "the other way round.",
         modules=["funcdl.nn.conv", "funcdl.nn.conv_transpose", "funcdl.nn.pool", "funcdl.nn.adaptive_pool",
                  "funcdl.nn.norm", "funcdl.nn.spatial", "funcdl.nn.upsample"],
         models=["cnn", "lenet", "dilated", "resnet", "resnet18", "densenet", "mbconv"], optimizers=[],
         notebooks=["04"], commands=["train"]),
    dict(slug="05_sequences", title="Sequence models",
         intro="Recurrent cells and backpropagation through time, embeddings, and convolutional sequence models.",
         modules=["funcdl.nn.recurrent", "funcdl.nn.bptt", "funcdl.nn.embedding"],
         models=["rnn", "lstm", "gru", "char-lstm", "lstm-forecast", "tcn", "seq2seq"], optimizers=[],
         notebooks=["05"], commands=["train", "sample"]),
    dict(slug="06_attention", title="Attention and transformers",
         intro="Scaled dot-product attention and its backward, the blockwise (flash) version, positional "
               "encodings, normalisation and feed-forward blocks, parameter-efficient fine-tuning, and the "
               "transformers built from them (GPT, BERT, ViT, encoder-decoders), including pretrained ones.",
         modules=["funcdl.nn.attention", "funcdl.nn.fused_attention", "funcdl.nn.flash", "funcdl.nn.positional",
                  "funcdl.nn.layernorm", "funcdl.nn.feedforward", "funcdl.nn.lora", "funcdl.nn.nf4"],
         models=["gpt", "bert_mlm", "bert_classifier", "transformer_seq2seq", "vit", "qa"], optimizers=[],
         notebooks=["06", "12"], commands=["train", "sample", "hf"]),
    dict(slug="07_generative", title="Generative models",
         intro="Autoencoders, variational autoencoders (the reparameterisation and the KL term derived by hand), "
               "GANs with their losses, penalties and spectral normalisation, a small style-based generator, "
               "denoising diffusion (DDPM, DDIM, classifier-free guidance on a UNet) and neural radiance fields "
               "(volume rendering with its hand-derived backward).",
         modules=["funcdl.nn.latent", "funcdl.nn.losses.gan", "funcdl.nn.spectral", "funcdl.nn.style",
                  "funcdl.nn.timestep", "funcdl.nn.render"],
         models=["autoencoder", "conv_autoencoder", "vae", "conv_vae", "gan", "dcgan", "cdcgan", "stylegan",
                 "ddpm", "cddpm", "nerf"],
         optimizers=[], notebooks=["07", "08"], commands=["train", "sample"]),
    dict(slug="08_explainability", title="Explainability",
         intro="What a trained network attends to and how its loss surface looks: attributions, loss landscapes, "
               "curvature and training dynamics (`funcdl.explain`).",
         modules=[], models=[], optimizers=[], notebooks=["09", "10"], commands=["explain", "landscape"]),
    dict(slug="09_engineering", title="Training engineering",
         intro="Making training and inference practical: quantization (post-training and quantization-aware), "
               "pruning and lottery tickets, export to StableHLO and ONNX, and the engineering of the training "
               "loop itself.",
         modules=["funcdl.nn.quant"], models=[], optimizers=[], notebooks=["11"],
         commands=["quantize", "prune", "export", "train"]),
]

# notebooks whose number no chapter names go here (the last chapter)
FALLBACK = CHAPTERS[-1]["slug"]


def chapter_of_module(module: str) -> dict:
    for ch in CHAPTERS:
        if module in ch["modules"]:
            return ch
    for ch in CHAPTERS:            # a new file in a package a chapter already covers (e.g. another loss)
        if any(module.startswith(m.rsplit(".", 1)[0] + ".") and m.count(".") > 2 for m in ch["modules"]):
            return ch
    return CHAPTERS[-1]


def chapter_of_model(name: str) -> dict:
    for ch in CHAPTERS:
        if name in ch["models"]:
            return ch
    return CHAPTERS[-1]


def chapter_of_notebook(stem: str) -> dict:
    prefix = stem.split("_", 1)[0]
    for ch in CHAPTERS:
        if prefix in ch["notebooks"]:
            return ch
    return next(ch for ch in CHAPTERS if ch["slug"] == FALLBACK)
