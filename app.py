"""jacviz app: decision cells, robustness, training and the Jacobian estimator.

Run:  streamlit run app.py      (data folder: $JACVIZ_DATA, default ./data)

This file is only the router and the shared sidebar; each page is a script in jacviz/ui/.
"""
import streamlit as st

st.set_page_config(page_title="jacviz · Jacobian regularization", page_icon=":material/grid_view:", layout="wide")

from jacviz.ui import common  # noqa: E402  (after set_page_config)

PAGES = [
    st.Page("jacviz/ui/cells.py", title="Decision cells", icon=":material/grid_view:", default=True),
    st.Page("jacviz/ui/robustness.py", title="Robustness", icon=":material/shield:"),
    st.Page("jacviz/ui/train.py", title="Train", icon=":material/model_training:"),
    st.Page("jacviz/ui/estimator.py", title="Jacobian estimator", icon=":material/casino:"),
    st.Page("jacviz/ui/about.py", title="About", icon=":material/info:"),
]

page = st.navigation(PAGES)
common.sidebar()
page.run()
