# `sentiscore score` with the ELMo token cache's generation size set (BENCHMARKS.md, "Memory, 2026-12-05 (later)"):
# python run_with_generation.py ROWS score IN OUT ...   (spawned segmentation workers never load the biLM)
# With TOKEN_CACHE_STATS=FILE, the cache's counters are written there at exit (JSON): tokens looked up, run through
# the char-CNN, copied from the previous generation, and the most rows held.
import atexit, json, os, sys

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
    cli(sys.argv[2:], prog_name="sentiscore", standalone_mode=False)
