#!/usr/bin/env bash
# Build a virtual environment holding the ORIGINAL LLaVA code (llava-torch 1.2.2.post1 on transformers
# 4.36.2, CPU torch), outside medvlm's own environment, for the slow reference test
# tests/integration/test_convert_reference.py:
#
#   scripts/reference_venv.sh /path/to/refvenv
#   MEDVLM_LLAVA_REFERENCE=/path/to/refvenv/bin/python pytest -m slow tests/integration/test_convert_reference.py
#
# llava-torch pins CUDA-era torch 2.0.1, gradio, deepspeed, bitsandbytes...: it is installed without its
# dependencies, next to the few the model, tokenizer and prompt code import. The original code is never
# copied into this repository.
set -euo pipefail
VENV=${1:?usage: scripts/reference_venv.sh VENV_DIR}
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}   # any CPU torch transformers 4.36.2 runs on

"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q "$TORCH"
"$VENV/bin/pip" install -q --no-deps llava-torch==1.2.2.post1
"$VENV/bin/pip" install -q transformers==4.36.2 tokenizers==0.15.0 "huggingface_hub<0.20" accelerate==0.21.0 \
    sentencepiece protobuf einops pillow numpy safetensors shortuuid
"$VENV/bin/python" -c "from llava.model import LlavaLlamaForCausalLM, LlavaMistralForCausalLM; import transformers; \
print('original LLaVA code ready on transformers', transformers.__version__)"
echo "export MEDVLM_LLAVA_REFERENCE=$VENV/bin/python"
