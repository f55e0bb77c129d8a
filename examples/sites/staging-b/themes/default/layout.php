<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title><?php echo acme_e($title ?? acme_config('site_name')); ?></title>
<link rel="stylesheet" href="themes/default/style.css">
</head>
<body>
<header><?php require ACME_ROOT . '/app/search/form.php'; ?></header>
<main><?php require $content; ?></main>
</body>
</html>
