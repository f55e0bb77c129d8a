<h1><?php echo acme_e(acme_config('site_name')); ?></h1>
<p>Welcome. Use the search box above to find a page.</p>
