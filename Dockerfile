# handclr with the torch that constraints.txt pins (the PyPI Linux wheel carries its CUDA runtime).
#   docker build -t handclr .
#   docker run --rm handclr                                       # the handclr CLI (sample-data, shard, verify, ...)
#   docker run --rm --gpus all --ipc=host -v $PWD/shards:/opt/handclr/shards -v $PWD/runs:/opt/handclr/runs \
#       handclr accelerate launch launch/pretrain.py --config launch/configs/tempclr_hanco_rn50.yaml
# (--ipc=host: the loader's workers hand batches over in shared memory.)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/handclr

# decord and opencv-python-headless wheels bundle FFmpeg; libgl is not needed for the headless build.
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml constraints.txt README.md ./
COPY pipeline ./pipeline
RUN pip install -c constraints.txt .

COPY shards/*.yaml ./shards/
COPY launch ./launch
COPY benchmarks ./benchmarks

CMD ["handclr", "--help"]
