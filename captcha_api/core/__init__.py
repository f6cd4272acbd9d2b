"""Recognition core: alphabet, preprocessing, CTC decoding, runtimes, model artifacts, errors. It imports no Flask,
and Keras only inside the Keras runtime, when a model is served with it."""
