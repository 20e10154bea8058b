"""SQuAD feature creation speed (issue: BERT): tokenisation must not dominate a run.

Writes N synthetic questions in the dev-v1.1 layout, then times reading the file and making
the MLPerf features (WordPiece, 384/64/128 windows, context maps) from scratch, as the first
run on a new dataset does.

Run: python benchmarks/squad_features.py [--questions 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness.datasets.squad import DEV_FILE, read_squad, write_squad
from harness.datasets.squad_features import create_features
from harness.datasets.synthetic_squad import squad_articles, synth_questions, synthetic_vocab
from harness.datasets.wordpiece import VOCAB_FILE, load_wordpiece


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    vocab = synthetic_vocab()
    questions = synth_questions(args.questions, seed=0, vocab=vocab)
    # Any in-context answer will do: only the timing matters here.
    answers = [(q.doc_tokens[0], q.token_starts[0]) for q in questions]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / VOCAB_FILE).write_text("\n".join(vocab) + "\n")
        write_squad(folder / DEV_FILE, squad_articles(list(questions), answers), {})
        times, count = [], 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            squad = read_squad(folder)
            features = create_features(squad.examples, load_wordpiece(folder / VOCAB_FILE))
            times.append(time.perf_counter() - start)
            count = features.count
    print(
        f"{args.questions} questions -> {count} features: median {statistics.median(times):.2f} s "
        f"(runs {', '.join(f'{t:.2f}' for t in times)}), target < 30 s"
    )


if __name__ == "__main__":
    main()
