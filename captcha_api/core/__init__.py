"""Recognition core: alphabet, preprocessing, model, CTC decoding, runtimes. No Flask here."""
