# `sentiscore score` with the ELMo token cache's generation size set (BENCHMARKS.md, "Memory, 2026-12-05 (later)"):
# python run_with_generation.py ROWS score IN OUT ...   (spawned segmentation workers never load the biLM)
# With TOKEN_CACHE_STATS=FILE, the cache's counters are written there at exit (JSON): tokens looked up, run through
# the char-CNN, copied from the previous generation, and the most rows held. With TRIM_EACH_CHUNK=1, glibc's
# malloc_trim(0) runs after each chunk's output columns are built (BENCHMARKS.md, "Memory, 2026-12-05 (allocator)").
import atexit, ctypes, json, os, sys

import sentiscore.embed.elmo as elmo
from sentiscore.cli import cli

if __name__ == "__main__":
    elmo.TOKEN_CACHE_GENERATION_ROWS = int(sys.argv[1])
    if os.environ.get("TOKEN_CACHE_STATS"):
        counts = {"looked_up": 0, "most_rows_held": 0, "computed": 0, "copied": 0}
        rows = elmo.TokenVectorCache.rows

        def counted(self, flat):
            out = rows(self, flat)
            counts["looked_up"] += len(flat)
            counts["most_rows_held"] = max(counts["most_rows_held"], len(self))
            counts["computed"], counts["copied"] = self.computed, self.copied
            return out

        elmo.TokenVectorCache.rows = counted
        atexit.register(lambda: open(os.environ["TOKEN_CACHE_STATS"], "w").write(json.dumps(counts)))
    if os.environ.get("TRIM_EACH_CHUNK") == "1":
        from sentiscore.pipeline import Scorer

        postprocess, libc = Scorer.postprocess, ctypes.CDLL(None)

        def trimmed(self, *args, **kwargs):
            out = postprocess(self, *args, **kwargs)
            libc.malloc_trim(0)
            return out

        Scorer.postprocess = trimmed
    cli(sys.argv[2:], prog_name="sentiscore", standalone_mode=False)
