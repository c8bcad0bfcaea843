"""cdnn: dense deep neural networks trained on the CPU by a fused C core."""
from cdnn import _core
from cdnn._core import build_info, get_num_threads, set_num_threads
