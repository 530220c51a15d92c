"""npower's built-in frontends (Caffe, PyTorch, TensorFlow/Keras), registered as `npower.frontends` entry points."""
