"""k-mer tokenizer of SARS-CoV-2 spike genes, for `AutoTokenizer.from_pretrained(dir, trust_remote_code=True)`.

Copied into every model directory as tokenization_kmer.py (bertgeom.handoff), so it must need nothing
but transformers. A raw nucleotide sequence (IUPAC codes, any case, U read as T) becomes its
overlapping k-mers (k and stride from tokenizer_config.json; right-padded with N to a whole window),
then the saved WordLevel vocabulary maps them to ids: the same ids as bertgeom.tokens.KmerTokenizer.
Text with spaces is taken as k-mers already. Anything else is a ValueError, never silent [UNK]s.
"""

import re

from transformers import PreTrainedTokenizerFast

_NUCLEOTIDES = re.compile(r"[ACGTURYSWKMBDHVN]+")


class KmerSpikeTokenizer(PreTrainedTokenizerFast):
    """PreTrainedTokenizerFast that splits raw spike sequences into overlapping k-mers first."""

    # No __init__ of its own: transformers then loads tokenizer.json as it is (a class with its own
    # __init__ gets a backend rebuilt from the vocabulary, which loses the WordLevel model).
    @property
    def k(self) -> int:
        return int(self.init_kwargs.get("k", 12))

    @property
    def stride(self) -> int:
        return int(self.init_kwargs.get("stride", 9))

    def kmer_text(self, sequence: str) -> str:
        """'ATGTTT...' -> 'ATGTTTGTTTTT TTTCTTGTTTTA ...' (N-padded to a whole number of windows)."""
        if " " in sequence.strip():
            return sequence
        seq = sequence.strip().upper().replace("U", "T")
        if not _NUCLEOTIDES.fullmatch(seq):
            bad = sorted(set(re.sub(r"[ACGTURYSWKMBDHVN]", "", seq)))
            raise ValueError(
                f"not a nucleotide sequence: characters {''.join(bad)!r} outside the IUPAC codes "
                "ACGTURYSWKMBDHVN (remove alignment gaps first)"
            )
        m = 1 + -(-max(len(seq) - self.k, 0) // self.stride)
        seq += "N" * ((m - 1) * self.stride + self.k - len(seq))
        return " ".join(seq[i : i + self.k] for i in range(0, m * self.stride, self.stride))

    def _convert(self, text):
        if text is None:
            return None
        if isinstance(text, str):
            return self.kmer_text(text)
        return [self._convert(t) if isinstance(t, str) else t for t in text]

    def _encode_plus(self, text, text_pair=None, *args, is_split_into_words: bool = False, **kwargs):
        if not is_split_into_words:
            text, text_pair = self._convert(text), self._convert(text_pair)
        return super()._encode_plus(text, text_pair, *args, is_split_into_words=is_split_into_words, **kwargs)
