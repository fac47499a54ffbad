# coding: utf-8
"""
@article{Kimanius2021,
title = "Data-driven regularization lowers the size barrier of cryo-EM structure determination",
journal = "Biochemical Journal",
volume = "478",
number = "24",
pages = "4169-4185",
year = "2021",
doi = "https://doi.org/10.1042/BCJ20210708",
author = "Kimanius, Dari and Dong, Liyi and Sharov, Grigory and Nakane, Takanori and Scheres, Sjors H. W.",
}

@misc{ClassRanker,
title = "ClassRanker: automatic scoring and selection of cryo-EM 2D class averages",
howpublished = "Scipion and RELION plugin, software",
year = "2025",
url = "https://github.com/classranker/scipion-em-classranker",
author = "{ClassRanker developers}",
}
"""
