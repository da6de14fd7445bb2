"""Google Landmarks v2: csv readers, landmark names from Wikimedia category urls, image paths, download (App. B.1).
"""
