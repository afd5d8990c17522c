"""Curation: raw videos and images -> curated clips and one clip table (the report's Sec. 5 funnel).

    sources ─ sanitation ─ borders ─ overlays (OCR) ─ shots ─ quality ─┬─ near-duplicates ─ admission ─ output
      (probe.py)          (regions.py)              (shots.py) (quality.py)  (dedup.py)   (admission.py) (output.py)
    per source, in parallel (engine.py: process pool or Ray Data) ─────┘   over all clips, in the driver

Every stage is a plain function with its own config section (config.py); each records its
measurement in the clip table (table.py), so a decision can be explained and a threshold changed
without redoing the work. `funnel.curate` runs the whole thing; `report.py` draws it.
"""
