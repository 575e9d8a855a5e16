# The metric's Space, as the evaluate library's own metric Spaces are: evaluate's widget around the module.
import os

import evaluate
from evaluate.utils import launch_gradio_widget


module = evaluate.load(os.path.dirname(os.path.abspath(__file__)))  # plcc_srcc.py beside this file
launch_gradio_widget(module)
