"""Streamlit pages of the jacviz app (run ``streamlit run app.py``).

Each page file here is a script that ``app.py`` registers with ``st.Page`` (file-based, so
``streamlit.testing.v1.AppTest`` can switch to it); :mod:`jacviz.ui.common` holds the shared
cached loaders, the sidebar and the URL-state helpers. Pages collect widget values and call
``jacviz`` functions; no model math lives here.
"""
