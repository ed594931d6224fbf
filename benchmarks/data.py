"""The user's files into token files: time and peak memory, ours against holding the corpus in Python.

A corpus of text files (default 300 MB, words drawn with a fixed seed) is tokenized by
``proxies.files.prepare`` (chunks of ~1 MB streamed into a memory-mapped file) and by the reference
a short script would write: read every file, keep the texts and their token ids in Python, then make
one array. Each case runs in its own process so its peak resident memory is its own; the table
shows the peak above a process that only imports the same modules. Bytes run on the whole corpus;
a byte-level BPE tokenizer (trained here, offline) on the first ``--tokenizer-mb``.

    python benchmarks/data.py [--mb 300] [--tokenizer-mb 40]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import describe  # noqa: E402

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an they "
         "you were her she there been one all we their has would when if so no what up out who them some could him "
         "into its then two more these time any may like over only other new very after our first").split()

# each case prints its seconds; the parent reads the child's peak RSS from the OS
CASE = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
from spanmix.proxies import files as user_files
case, paths, tokenizer = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] or None
start = time.perf_counter()
if case == "ours":
    corpus = user_files.prepare(tuple(paths), "text", tokenizer, 0.1, progress=False)
    n = corpus.tokens["train"] + corpus.tokens["val"]
elif case == "reference":
    texts = [Path(p).read_text() for p in paths]
    if tokenizer:
        tok = user_files.load_tokenizer(tokenizer)
        ids = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    else:
        ids = [list(t.encode()) for t in texts]
    n = len(np.concatenate([np.asarray(i, dtype=np.uint32) for i in ids]))
print(json.dumps({"seconds": time.perf_counter() - start, "tokens": n if case != "idle" else 0,
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def write_corpus(folder: Path, mb: int) -> list[Path]:
    rng = np.random.default_rng(0)
    words = np.array(WORDS)
    paths = []
    for i in range(max(1, mb // 2)):  # 2 MB files: lines of 12 words
        lines = words[rng.integers(0, len(words), size=(2 * 2**20 // 51, 12))]  # ~51 bytes a line
        text = "\n".join(" ".join(line) for line in lines) + "\n"
        path = folder / f"doc{i:04d}.txt"
        path.write_text(text)
        paths.append(path)
    return paths


def train_tokenizer(folder: Path, sample: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train([str(sample)], trainers.BpeTrainer(vocab_size=4096, special_tokens=["<|endoftext|>"],
                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def run(case: str, paths: list[Path], tokenizer: Path | None, cache: Path) -> dict[str, float]:
    env = {"SPANMIX_CACHE": str(cache), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", CASE, case, json.dumps([str(p) for p in paths]), str(tokenizer or "")],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=300, help="corpus size in MB (default 300)")
    parser.add_argument("--tokenizer-mb", type=int, default=40, help="MB tokenized with the BPE tokenizer (default 40)")
    args = parser.parse_args()
    print(describe())
    import tokenizers

    print(f"tokenizers {tokenizers.__version__}; corpus {args.mb} MB of text files, BPE on the first {args.tokenizer_mb} MB")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_corpus(folder, args.mb)
        tokenizer = train_tokenizer(folder, paths[0])
        size = sum(p.stat().st_size for p in paths) / 2**20
        idle = run("idle", [], None, folder / "cache")["peak"]
        print(f"\n{'case':<34}{'MB':>7}{'seconds':>9}{'MB/s':>8}{'peak RSS above idle':>22}")
        rows = {}
        sub = paths[: max(1, args.tokenizer_mb // 2)]
        sub_mb = sum(p.stat().st_size for p in sub) / 2**20
        for label, case, files, tok, mb, cache in [
            ("bytes: ours, cold cache", "ours", paths, None, size, "bytes"),
            ("bytes: ours, warm cache", "ours", paths, None, size, "bytes"),
            ("bytes: reference (in Python)", "reference", paths, None, size, ""),
            ("BPE: ours, cold cache", "ours", sub, tokenizer, sub_mb, "bpe"),
            ("BPE: reference (in Python)", "reference", sub, tokenizer, sub_mb, ""),
        ]:
            result = run(case, files, tok, folder / f"cache-{cache or label}")
            rows[label] = result
            above = (result["peak"] - idle) / 2**20
            print(f"{label:<34}{mb:>7.0f}{result['seconds']:>9.1f}{mb / result['seconds']:>8.1f}{above:>18.0f} MB")
        for kind in ("bytes", "BPE"):
            ours, ref = rows[f"{kind}: ours, cold cache"], rows[f"{kind}: reference (in Python)"]
            # under 1 MB above idle reads as 1 MB: the ratio is then a lower bound
            ratio = (ref["peak"] - idle) / max(ours["peak"] - idle, 2**20)
            print(f"{kind}: peak memory above idle, reference / ours >= {ratio:.0f}x; time, ours / reference = "
                  f"{ours['seconds'] / ref['seconds']:.2f}x; tokens {ours['tokens']} (ours, one end-of-text per document "
                  f"with BPE) vs {ref['tokens']}")


if __name__ == "__main__":
    main()
