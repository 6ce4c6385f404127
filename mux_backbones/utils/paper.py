"""Figures reported in the MUXConv paper (Tables 1-3) and by the official release.

Used by the analysis tools to print measured numbers next to the published ones.
``params`` in millions, ``madds`` in millions of multiply-adds.
"""
PAPER_RESULTS = {
    # ImageNet, 224x224 (Table 1); m and l also have the official release's exact counts.
    'muxnet-xs': dict(params=1.8, madds=66, top1=66.7),
    'muxnet-s': dict(params=2.4, madds=117, top1=71.6),
    'muxnet-m': dict(params=3.4, madds=218, top1=75.3, official_params=3.354,
                     official_madds=216.8),
    'muxnet-l': dict(params=4.0, madds=318, top1=76.6, official_params=4.041,
                     official_madds=316.5),
    'mobilenetv2': dict(params=3.4, madds=300, top1=72.0),
    # PASCAL VOC07 test mAP (Table 2).
    'ssdlite_muxnet-m': dict(params=3.2, madds=500, voc_map=68.6),
    'ssd_muxnet-l': dict(params=9.9, madds=1400, voc_map=73.8),
    'ssdlite_mobilenetv2': dict(params=3.4, madds=700, voc_map=67.4),
    'ssd_mobilenetv2': dict(params=8.9, madds=1400, voc_map=73.2),
    # ADE20K mIoU / pixel accuracy (Table 3).
    'c1_muxnet-m': dict(params=3.4, madds=200, miou=32.42, pixel_acc=75.00),
    'ppm_muxnet-m': dict(params=3.4, madds=200, miou=35.80, pixel_acc=76.33),
    'c1_mobilenetv2': dict(params=3.5, madds=300, miou=34.84, pixel_acc=75.75),
    'ppm_mobilenetv2': dict(params=3.5, madds=300, miou=35.76, pixel_acc=77.77),
}
