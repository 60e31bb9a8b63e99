# handclr on an official PyTorch CUDA runtime image (torch and torchvision come from the image).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/handclr

# decord and opencv-python-headless wheels bundle FFmpeg; libgl is not needed for the headless build.
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN pip install .

COPY shards/*.yaml ./shards/
COPY launch ./launch
COPY benchmarks ./benchmarks

ENTRYPOINT ["handclr"]
CMD ["--help"]
