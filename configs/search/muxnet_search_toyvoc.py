# Tri-objective MUXNet search with accuracy from training: SSDLite + candidate trained briefly
# from scratch on the embedded toy VOC set (VOC mAP), params and MAdds; MOEA/D-PBI with the
# surrogate pre-screening 4 candidates per slot. Each evaluation is a low-fidelity training
# (about 30 s on 2 CPU cores), so the default budget is small; raise --budget and use --workers
# or --ray-address on real hardware.
#   python tools/dataset_converters/make_toy_data.py --task det
#   python tools/search/search_muxnet.py configs/search/muxnet_search_toyvoc.py --work-dir DIR
search = dict(
    objectives=('acc', 'params', 'madds'),
    evaluator=dict(type='train', task='det', max_iters=40,
                   cfg_options={'train_dataloader.num_workers': 0,
                                'train_dataloader.persistent_workers': False,
                                'val_dataloader.num_workers': 0,
                                'val_dataloader.persistent_workers': False}),
    algorithm='moead',
    pop_size=6,
    budget=18,
    bounds=dict(acc=(1.0, 0.0), params=(1.0, 5.5), madds=(25.0, 650.0)),
    surrogate_candidates=4)
