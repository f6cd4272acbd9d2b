"""Recognition core: alphabet, preprocessing, CTC decoding, runtimes, model artifacts, errors. No Flask, no Keras."""
